<?php
// A responder written to the seed's Laravel logic (SubscribeToGeneralChannel) with phpredis
// instead of Laravel: PSUBSCRIBE the pattern, decode, build {source: "laravel", action,
// requestId} and merge the action's result into it (the envelope wins), then PUBLISH on the
// request channel minus "_sender". Like the seed, an unknown action gets no reply. It is the
// host interop tests' PHP peer and the `peers` compose profile's PHP container.
//
// Environment: REDIS_URL (redis://host:port), REDIS_USERNAME, REDIS_PASSWORD_FILE (or
// REDIS_PASSWORD), PEER_PATTERN (default laravel_database_php_sender), PEER_ANNOUNCE_CHANNEL
// (default off): after each answer, a seed-style push (requestId null) there, which
// gateways listening on that channel forward to browsers. Reconnects after a Redis restart.

function say(string $line): void
{
    fwrite(STDOUT, "[php_peer] $line\n");
}

function main_configs(): array
{
    return ["appName" => "php responder", "locale" => "fa", "currency" => "IRR"];
}

/** The action's result, merged under the envelope as the seed does; null: no reply. */
function answer(array $request): ?array
{
    $response = ["source" => "laravel", "action" => $request["action"], "requestId" => $request["requestId"] ?? null];
    switch ($request["action"]) {
        case "configs":
            return [...main_configs(), ...$response];
        case "sum":
            $numbers = $request["data"] ?? [];
            if (!is_array($numbers) || array_filter($numbers, fn ($n) => !is_int($n) && !is_float($n))) {
                return null;  // the seed has no error replies
            }
            return [...["total" => array_sum($numbers)], ...$response];
        default:
            return null;
    }
}

function connect(array $url, string $username, string $password, float $readTimeout): Redis
{
    $redis = new Redis();
    $redis->connect($url["host"] ?? "redis", (int) ($url["port"] ?? 6379), 5.0);
    if ($password !== "") {
        $redis->auth($username !== "" ? [$username, $password] : $password);
    }
    $redis->setOption(Redis::OPT_READ_TIMEOUT, $readTimeout);
    return $redis;
}

$url = parse_url(getenv("REDIS_URL") ?: "redis://redis:6379/0");
$username = getenv("REDIS_USERNAME") ?: "";
$passwordFile = getenv("REDIS_PASSWORD_FILE") ?: "";
$password = $passwordFile !== "" ? trim((string) file_get_contents($passwordFile)) : (getenv("REDIS_PASSWORD") ?: "");
$pattern = getenv("PEER_PATTERN") ?: "laravel_database_php_sender";
$announce = getenv("PEER_ANNOUNCE_CHANNEL") ?: "";
$answered = 0;
$backoff = 0.5;

while (true) {
    try {
        $sub = connect($url, $username, $password, -1);
        $pub = connect($url, $username, $password, 5.0);
        say("serving pattern $pattern" . ($announce !== "" ? ", announcing on $announce" : ""));
        $backoff = 0.5;
        $sub->psubscribe([$pattern], function ($redis, $pattern, $channel, $message) use ($pub, $announce, &$answered) {
            $request = json_decode($message, true);
            if (!is_array($request) || !isset($request["action"]) || !is_string($request["action"])) {
                return;
            }
            $response = answer($request);
            if ($response === null) {
                return;
            }
            $pub->publish(preg_replace('/_sender$/', '', $channel), json_encode($response));
            $answered++;
            $requestId = is_string($response["requestId"]) ? $response["requestId"] : "null";
            say("answered {$request["action"]} requestId=$requestId for " . json_encode($request["source"] ?? null));
            if ($announce !== "") {
                $data = ["answered" => $request["action"], "for" => $request["source"] ?? null, "requestId" => $response["requestId"], "count" => $answered];
                $pub->publish($announce, json_encode([...$data, "source" => "laravel", "action" => "php_peer", "requestId" => null, "data" => $data]));
            }
        });
    } catch (RedisException $exc) {
        say("redis: {$exc->getMessage()}; reconnecting in {$backoff}s");
        usleep((int) ($backoff * 1e6));
        $backoff = min($backoff * 2, 5.0);
    }
}
