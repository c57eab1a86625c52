<?php
/*
 * Settings of upload.php and of the graph page (index.php).
 *
 * Edit the defaults below, or set the environment variables named next to
 * them (Apache: `SetEnv KEI_UPLOAD_KEY ...`; the tests start `php -S` with
 * them).  An environment variable that is set and not empty wins.
 *
 * This file only returns an array: requesting it over the web prints nothing
 * (and php/.htaccess denies it anyway).
 */

$kei_env = function (string $name, $default) {
    $value = getenv($name);
    return ($value === false || $value === '') ? $default : $value;
};

return [
    // Keys a client may upload with (form field `key`).  Use long random
    // strings, e.g. `php -r 'echo bin2hex(random_bytes(24)), "\n";'`.
    // While this list is empty every upload is refused with 503.
    'upload_keys' => array_values(array_filter([
        $kei_env('KEI_UPLOAD_KEY', ''),
        // 'put-a-long-random-key-here',
    ], 'strlen')),

    // Where uploaded files go.  Better outside the web root; if it stays
    // inside, keep data/.htaccess (deny all) next to the files.
    'data_dir' => $kei_env('KEI_DATA_DIR', __DIR__ . '/data'),

    // Largest `data` field in bytes (413 above).  The uploader's
    // max_batch_bytes defaults to the same value.
    'max_bytes' => (int) $kei_env('KEI_MAX_BYTES', 65536),

    // Minimum seconds between two accepted uploads with the same key (429
    // with Retry-After below it).  0 turns the limit off.
    'min_interval' => (float) $kei_env('KEI_MIN_INTERVAL', 10),

    // Longest file name, and the extensions a file name may end with.
    'max_name_length' => 100,
    'extensions' => ['txt', 'csv'],

    // Batch ids remembered per data file for de-duplication.  The ids file
    // is cut back to this many when it reaches twice as many.
    'ids_keep' => (int) $kei_env('KEI_IDS_KEEP', 1000),

    // ---- graph page (index.php)

    // Label and unit per series, keyed "unit,sensor" as in the data files.
    // The meter's series (BR,E7 ...) have English defaults; a series not
    // named here is titled "Unit <unit>, sensor <sensor>" without a unit.
    // Series named here are always drawn, even in a file with many ids.
    'series' => [
        // 'A,T1' => ['label' => 'Living room', 'unit' => '°C'],
        // 'A,H1' => ['label' => 'Living room humidity', 'unit' => '%'],
    ],

    // Price per kWh imported from / exported to the grid, for the cost
    // beside the energy totals; null: no cost shown.
    'tariff' => ['import' => null, 'export' => null, 'currency' => 'yen'],

    // While the page shows today it reloads itself this often (s); 0: never.
    'refresh_seconds' => 60,

    // Time zone for "today" and the tiles' ages, e.g. 'Asia/Tokyo'; '' uses
    // php.ini, $TZ or the system's.
    'timezone' => '',
];
