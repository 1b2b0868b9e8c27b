<?php
// Issue a browser token for ws_gateway from a PHP/Laravel backend: HS256 with hash_hmac
// only (no Composer package). In Laravel, put issueToken() in a controller behind your
// auth middleware and return the token to the page as JSON; the page sends
// {"type": "auth", "token": ...} as its first WebSocket frame.
//
//   GATEWAY_JWT_SECRET=... php examples/issue_token.php alice "echo,sum" 300
//   (or GATEWAY_JWT_SECRET_FILE=/run/secrets/gateway_jwt_secret)
declare(strict_types=1);

function base64url(string $data): string
{
    return rtrim(strtr(base64_encode($data), '+/', '-_'), '=');
}

/**
 * @param string $secret the gateway's GATEWAY_JWT_SECRET (32+ bytes)
 * @param string $sub your user's id: per-user pushes go to <channel>.user.<sub>
 * @param list<string> $actions action names this user may call, or ["*"]
 * @param int $ttlSeconds keep it short (minutes): the page refreshes on its open socket
 */
function issueToken(string $secret, string $sub, array $actions, int $ttlSeconds = 300, ?array $events = null): string
{
    $now = time();
    $payload = ['sub' => $sub, 'iat' => $now, 'exp' => $now + $ttlSeconds, 'actions' => array_values($actions)];
    if ($events !== null) {
        $payload['events'] = array_values($events);
    }
    $flags = JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR;
    $signingInput = base64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT'], $flags)) . '.' . base64url(json_encode($payload, $flags));
    return $signingInput . '.' . base64url(hash_hmac('sha256', $signingInput, $secret, true));
}

function readSecret(): string
{
    $file = getenv('GATEWAY_JWT_SECRET_FILE');
    if ($file !== false && $file !== '') {
        return trim((string) file_get_contents($file));
    }
    $secret = getenv('GATEWAY_JWT_SECRET');
    if ($secret === false || $secret === '') {
        fwrite(STDERR, "set GATEWAY_JWT_SECRET or GATEWAY_JWT_SECRET_FILE\n");
        exit(2);
    }
    return $secret;
}

if (PHP_SAPI === 'cli' && realpath($argv[0]) === __FILE__) {
    $sub = $argv[1] ?? 'alice';
    $actions = explode(',', $argv[2] ?? '*');
    $ttl = (int) ($argv[3] ?? 300);
    echo issueToken(readSecret(), $sub, $actions, $ttl), "\n";
}
