<?php
/*
 * kei upload endpoint: appends uploaded text to a file in the data directory.
 *
 * Request: POST, application/x-www-form-urlencoded (or multipart) fields
 *   type   "text"
 *   key    the upload key (see config.php), compared in constant time
 *   fname  target file name: [A-Za-z0-9_-]+ then dot-separated parts of
 *          [A-Za-z0-9_], ending in an allowed extension (.txt, .csv);
 *          e.g. sum20261123-mylogfile.txt
 *   data   the text to append, at most max_bytes bytes
 *   id     optional batch id ([A-Za-z0-9_-]{1,64}); an id that was already
 *          accepted for this file with the same data answers OK without
 *          appending again, so a client may re-send a batch whose answer it
 *          never saw.  The same id with different data answers 409 and
 *          stores nothing: two batches under one id is a client fault that
 *          must not lose data silently.
 *
 * Answer: text/plain body "OK." with 200, or "Error: <reason>" with
 *   405 not a POST, 403 bad key, 400 bad field, 413 too large,
 *   409 a known batch id with different data,
 *   429 too soon after the previous upload with this key (Retry-After: s),
 *   500 the data directory is unusable, 503 no key configured.
 *
 * Uploads are serialised by an exclusive flock on <data_dir>/.kei-upload.lock:
 * the id check, the append, the id record and the rate-limit state change
 * together, so concurrent uploads never interleave and a duplicate id is
 * appended once.  A request killed between its append and its id record
 * (server stopped, power lost) is finished by the next request for that file
 * (see kei_recover), so even then a retried id is appended exactly once.
 * Files the endpoint keeps for itself start with a dot, which no uploaded
 * name can: .<fname>.ids (the ids, one a line), .<fname>.sums ("<id>
 * <digest of its data>", for the 409 check; an id stored before this file
 * existed has no digest and is answered OK as before) and .<fname>.pending.
 *
 * Works with PHP 7.4 and 8.x, standard library only.
 */

declare(strict_types=1);

// A warning in the answer body would hide "OK." and leak paths: log them instead.
ini_set('display_errors', '0');
ini_set('log_errors', '1');

/** The posted field `$name` as a string ('' if missing or an array). */
function kei_field(string $name): string
{
    $value = $_POST[$name] ?? '';
    return is_string($value) ? $value : '';
}

/** Bytes of an ini size such as "8M". */
function kei_ini_bytes(string $value): int
{
    $value = trim($value);
    $number = (int) $value;
    switch (strtolower(substr($value, -1))) {
        case 'g': return $number << 30;
        case 'm': return $number << 20;
        case 'k': return $number << 10;
        default: return $number;
    }
}

/** Null if `$fname` is an acceptable file name, else the reason. */
function kei_name_problem(string $fname, array $config): ?string
{
    if ($fname === '' || strlen($fname) > $config['max_name_length']) {
        return 'fname missing or too long';
    }
    // D: '$' must not match before a trailing newline.
    if (!preg_match('/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_]+)*$/D', $fname)) {
        return 'fname may only hold letters, digits, _ - and inner dots';
    }
    $parts = explode('.', $fname);
    if (count($parts) < 2 || !in_array(end($parts), $config['extensions'], true)) {
        return 'fname must end in .' . implode(' or .', $config['extensions']);
    }
    // Apache may run "x.php.txt" as PHP when a handler is mapped to .php:
    // refuse inner parts that look like something a server executes.
    foreach (array_slice($parts, 1, -1) as $inner) {
        if (preg_match('/^(ph.*|cgi|fcgi|pl|py|sh|shtml?|asp.*|jsp.*|htaccess)$/i', $inner)) {
            return 'fname has an executable-looking inner extension';
        }
    }
    return null;
}

/** Appends `$data` to `$path` in full, or leaves the file as it was. */
function kei_append(string $path, string $data): bool
{
    $handle = @fopen($path, 'ab');
    if ($handle === false) {
        return false;
    }
    $before = fstat($handle)['size'];
    $written = @fwrite($handle, $data);
    $ok = ($written === strlen($data)) && fflush($handle);
    if ($ok && function_exists('fsync')) {   // PHP >= 8.1
        $ok = fsync($handle);
    }
    if (!$ok) {
        ftruncate($handle, $before);          // never leave half a batch
    }
    fclose($handle);
    return $ok;
}

/** The batch ids stored for one file, oldest first. */
function kei_read_ids(string $ids_path): array
{
    return is_file($ids_path) ? (file($ids_path, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) ?: []) : [];
}

/** Digest of a batch's data, kept per id to tell a retry from a clash. */
function kei_digest(string $data): string
{
    return substr(hash('sha256', $data), 0, 32);
}

/** [id => digest] of the batches stored for one file (ids with a digest only). */
function kei_read_sums(string $sums_path): array
{
    $sums = [];
    foreach (kei_read_ids($sums_path) as $line) {
        $fields = explode(' ', $line);
        if (count($fields) === 2) {
            $sums[$fields[0]] = $fields[1];
        }
    }
    return $sums;
}

/**
 * Remembers `$id` (and the digest of its data, when known) in `$ids_path`
 * and `$sums_path`; keeps the newest `$keep` when the ids grow to 2x.
 */
function kei_record_id(string $ids_path, string $sums_path, array $ids, string $id,
                       ?string $digest, int $keep): void
{
    $ids[] = $id;
    if (count($ids) >= 2 * max(1, $keep)) {
        $kept = array_slice($ids, -$keep);
        $sums = kei_read_sums($sums_path);
        if ($digest !== null) {
            $sums[$id] = $digest;
        }
        $lines = [];
        foreach ($kept as $one) {
            if (isset($sums[$one])) {
                $lines[] = $one . ' ' . $sums[$one];
            }
        }
        // Sums first: an id without its digest is only a weaker check.
        file_put_contents($sums_path . '.tmp', $lines ? implode("\n", $lines) . "\n" : '');
        rename($sums_path . '.tmp', $sums_path);
        file_put_contents($ids_path . '.tmp', implode("\n", $kept) . "\n");
        rename($ids_path . '.tmp', $ids_path);
    } else {
        if ($digest !== null) {
            file_put_contents($sums_path, $id . ' ' . $digest . "\n", FILE_APPEND);
        }
        file_put_contents($ids_path, $id . "\n", FILE_APPEND);
    }
}

/**
 * Finishes what a request killed in mid-store left behind (the server
 * stopped, the power failed).  Before appending, a batch with an id writes
 * "<id> <size before> <length> <digest>" to `$pending_path`; if that file is still
 * there, the append either completed (then the id is recorded, so the
 * client's retry is answered OK and not appended twice) or did not (then any
 * partial tail is cut off, and the retry appends it once).
 */
function kei_recover(string $path, string $pending_path, string $ids_path, string $sums_path,
                     int $keep): void
{
    if (!is_file($pending_path)) {
        return;
    }
    $fields = explode(' ', trim((string) file_get_contents($pending_path)));
    if (count($fields) === 3 || count($fields) === 4) {   // 3: written before digests
        [$id, $offset, $length] = [$fields[0], (int) $fields[1], (int) $fields[2]];
        $digest = $fields[3] ?? null;
        clearstatcache(true, $path);
        $size = is_file($path) ? (int) filesize($path) : 0;
        if ($size >= $offset + $length) {
            $ids = kei_read_ids($ids_path);
            if (!in_array($id, $ids, true)) {
                kei_record_id($ids_path, $sums_path, $ids, $id, $digest, $keep);
            }
        } elseif ($size > $offset) {
            $handle = @fopen($path, 'r+b');
            if ($handle !== false) {
                ftruncate($handle, $offset);
                fclose($handle);
            }
        }
    }
    unlink($pending_path);
}

/**
 * The work done under the lock: duplicate check, rate limit, append.
 * Returns [status, body, extra headers].
 */
function kei_store(array $config, string $key, string $fname, string $data, string $id): array
{
    $dir = rtrim($config['data_dir'], '/');
    $ids_path = "$dir/.$fname.ids";
    $sums_path = "$dir/.$fname.sums";
    $pending_path = "$dir/.$fname.pending";
    kei_recover("$dir/$fname", $pending_path, $ids_path, $sums_path, $config['ids_keep']);
    $ids = $id !== '' ? kei_read_ids($ids_path) : [];
    $digest = kei_digest($data);
    if ($id !== '' && in_array($id, $ids, true)) {
        $stored = kei_read_sums($sums_path)[$id] ?? null;
        if ($stored !== null && !hash_equals($stored, $digest)) {
            return [409, 'Error: batch id ' . $id . ' was already stored with different data', []];
        }
        return [200, 'OK.', []];              // a retry of a stored batch
    }
    // After the id check: a batch stored before the limit was lowered is
    // still a retry, not "too large" (the client would split and resend it).
    if (strlen($data) > $config['max_bytes']) {
        return [413, 'Error: data larger than ' . $config['max_bytes'] . ' bytes', []];
    }

    // The rate limit counts accepted uploads per key; keys are stored hashed.
    $rate_path = "$dir/.kei-rate.json";
    $rate = is_file($rate_path) ? json_decode((string) file_get_contents($rate_path), true) : [];
    $rate = is_array($rate) ? $rate : [];
    $who = substr(hash('sha256', $key), 0, 16);
    $now = microtime(true);
    $since = $now - (float) ($rate[$who] ?? 0);
    // $since < 0: the clock went back; do not lock the client out for that.
    if ($config['min_interval'] > 0 && $since >= 0 && $since < $config['min_interval']) {
        $wait = (int) ceil($config['min_interval'] - $since);
        return [429, 'Error: too many uploads, retry in ' . $wait . ' s', ['Retry-After: ' . $wait]];
    }

    if ($id !== '') {
        clearstatcache(true, "$dir/$fname");
        $size = is_file("$dir/$fname") ? (int) filesize("$dir/$fname") : 0;
        file_put_contents($pending_path, "$id $size " . strlen($data) . " $digest");
    }
    if (!kei_append("$dir/$fname", $data)) {
        @unlink($pending_path);
        return [500, 'Error: could not write the data file', []];
    }
    if ($id !== '') {
        kei_record_id($ids_path, $sums_path, $ids, $id, $digest, $config['ids_keep']);
        unlink($pending_path);
    }
    $rate[$who] = $now;
    file_put_contents("$rate_path.tmp", json_encode($rate));
    rename("$rate_path.tmp", $rate_path);
    return [200, 'OK.', []];
}

/** Checks the request and stores it.  Returns [status, body, extra headers]. */
function kei_handle(array $config): array
{
    if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
        return [405, 'Error: POST only', ['Allow: POST']];
    }
    $length = (int) ($_SERVER['CONTENT_LENGTH'] ?? 0);
    $post_max = kei_ini_bytes((string) ini_get('post_max_size'));   // 0: no limit
    if ($post_max > 0 && $length > $post_max) {
        return [413, 'Error: request too large', []];   // PHP dropped the fields
    }
    if (!$config['upload_keys']) {
        return [503, 'Error: no upload key configured on the server', []];
    }
    $key = kei_field('key');
    $key_ok = false;
    foreach ($config['upload_keys'] as $known) {   // no early exit: constant time
        $key_ok = hash_equals((string) $known, $key) || $key_ok;
    }
    if (!$key_ok) {
        return [403, 'Error: bad key', []];
    }
    if (kei_field('type') !== 'text') {
        return [400, 'Error: type must be text', []];
    }
    $fname = kei_field('fname');
    $problem = kei_name_problem($fname, $config);
    if ($problem !== null) {
        return [400, 'Error: ' . $problem, []];
    }
    $id = kei_field('id');
    if ($id !== '' && !preg_match('/^[A-Za-z0-9_-]{1,64}$/D', $id)) {
        return [400, 'Error: id must be 1-64 of A-Z a-z 0-9 _ -', []];
    }
    $data = kei_field('data');
    if ($data === '') {
        return [400, 'Error: no data', []];
    }

    $dir = rtrim($config['data_dir'], '/');
    if (!is_dir($dir) || !is_writable($dir)) {
        return [500, 'Error: data directory missing or not writable', []];
    }
    $lock = @fopen("$dir/.kei-upload.lock", 'c');
    if ($lock === false || !flock($lock, LOCK_EX)) {
        return [500, 'Error: could not lock the data directory', []];
    }
    try {
        return kei_store($config, $key, $fname, $data, $id);
    } finally {
        flock($lock, LOCK_UN);
        fclose($lock);
    }
}

[$status, $body, $headers] = kei_handle(require __DIR__ . '/config.php');
http_response_code($status);
header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
foreach ($headers as $line) {
    header($line);
}
echo $body;
