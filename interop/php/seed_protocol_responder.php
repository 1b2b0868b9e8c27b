<?php
// A responder written to the seed's Laravel logic (SubscribeToGeneralChannel), with
// php-redis instead of Laravel: PSUBSCRIBE the pattern, decode, build
// {source: "laravel", action, requestId} and merge the action's result into it (the
// envelope wins), then PUBLISH on the request channel minus "_sender". Like the seed, an
// unknown action gets no reply.
//
//   php seed_protocol_responder.php HOST PORT PATTERN

[$script, $host, $port, $pattern] = $argv;

$sub = new Redis();
$sub->connect($host, (int) $port);
$sub->setOption(Redis::OPT_READ_TIMEOUT, -1);
$pub = new Redis();
$pub->connect($host, (int) $port);

function main_configs(): array
{
    return ["appName" => "php responder", "locale" => "fa", "currency" => "IRR"];
}

$sub->psubscribe([$pattern], function ($redis, $pattern, $channel, $message) use ($pub) {
    $request = json_decode($message, true);
    if (!is_array($request) || !isset($request["action"])) {
        return;
    }
    $response = ["source" => "laravel", "action" => $request["action"], "requestId" => $request["requestId"] ?? null];
    switch ($request["action"]) {
        case "configs":
            $response = [...main_configs(), ...$response];
            break;
        case "sum":
            $response = [...["total" => array_sum($request["data"] ?? [])], ...$response];
            break;
        default:
            return;
    }
    $pub->publish(preg_replace('/_sender$/', '', $channel), json_encode($response));
});
