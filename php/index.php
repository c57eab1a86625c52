<?php
/*
 * kei graph page: a logger's files drawn as inline SVG charts, with the
 * latest value of every series on top.  Keep it open: it reloads itself.
 *
 * Open it in a browser on the LAN:
 *   index.php?date=YYYYMMDD&range=day|week|month|year&base=NAME&raw=0|1
 *   date   a day in the range; YYYYMMDD or YYYY-MM-DD (default: today, see
 *          "Time zone")
 *   range  day (default): that day, raw readings and 10-minute averages,
 *          energy per half-hour; week (Monday to Sunday), month, year: the
 *          10-minute averages only, energy per day (per month for a year)
 *   base   the <base> of the file names below (default: the first base with
 *          files for that day, else the first base found)
 *   raw    1 (default): in the day range, draw the raw readings too when the
 *          day's raw file is there; 0: only the 10-minute averages
 * A date, range or base that is not well-formed answers 400 and reads no file.
 *
 * Files (only names matching ^(sum)?[0-9]{8}-[A-Za-z0-9_-]+\.txt$ in the
 * data directory: `data_dir` of config.php, i.e. KEI_DATA_DIR or php/data/):
 *   YYYYMMDD-<base>.txt     YYYY/MM/DD hh:mm:ss,<unit>,<sensor>,<value>,<data_id>
 *   sumYYYYMMDD-<base>.txt  YYYY/MM/DD hh:m0,<unit>,<sensor>,<average>
 * A line that does not parse, or is dated another day, is counted and
 * skipped.  Files above 64 MiB are not read.  For the cumulative readings
 * around midnight the previous day's last and the next day's first hour are
 * read as well (only the tail / head of those files).
 *
 * Memory: files are streamed line by line and nothing per line is kept.  Each
 * series keeps, per plot column (864 across the range), its first, lowest,
 * highest and last reading (M4 downsampling: the same pixels as every
 * point); each energy register keeps the readings around each half-hour
 * boundary.  At most GRAPH_MAX_SERIES (unit, sensor) pairs are drawn (the
 * meter's and those named in config.php always); further ids are counted and
 * reported.  Should PHP still hit memory_limit or max_execution_time, the
 * page answers 503 with a message that says so, not a blank page.
 *
 * What it shows:
 *   now      a tile per series: its latest value in the range and its age
 *            ("stale" when older than 3 reading intervals, at least 2 min)
 *   energy   kWh imported from the grid (forward: BR,EA where present, the
 *            meter's exact half-hour values, else BR,E0 interpolated at the
 *            half-hour boundaries) and exported to the grid (reverse: BR,EB,
 *            BR,E3), as half-hour bars (day), daily bars (week, month) or
 *            monthly bars (year), with totals and, when config.php sets a
 *            tariff, their cost.  A half-hour whose ends are not both known,
 *            or whose difference is negative (register wrap), counts nothing.
 *   power    BR,E7 (W; above 0 importing from the grid, below 0 exporting)
 *   current  BR,E8R and BR,E8T phase currents (A)
 *   other    one chart per other (unit, sensor), titled with config.php's
 *            label and unit for it, else "Unit <unit>, sensor <sensor>"
 * A 10-minute average is drawn at the middle of its window; EA/EB averages
 * at the window start, which is the meter time their value belongs to.  The
 * day's time axis spans the hours that have readings (a partial day is not
 * squeezed into a corner).  A pause longer than 2.5 typical reading intervals
 * (and at least two columns) breaks a line.
 *
 * Server-rendered: everything is on the page without script.  A small inline
 * script (allowed by the Content-Security-Policy through a per-request
 * nonce) adds the time and value of the point under the pointer or finger;
 * it reads them from each path's data-t (seconds from the range start) and
 * data-v.  Nothing is ever loaded from anywhere else.
 *
 * Stable hooks for tests and scrapers: svg.chart[data-chart][data-start]
 * [data-x0][data-x1], path.series[data-unit][data-sensor][data-kind=raw|avg]
 * [data-points][data-vertices][data-t][data-v], rect.bar[data-direction]
 * [data-slot][data-kwh], [data-day-total-forward], [data-day-total-reverse],
 * .tile[data-unit][data-sensor][data-value][data-time][data-age],
 * nav.ranges a[data-range].
 *
 * Time zone: config.php's `timezone` if it has one, else php.ini's
 * date.timezone unless it is UTC, else $TZ, else the system's /etc/localtime,
 * else UTC.  Only "today" and the tiles' ages depend on it: file times are
 * the logger's local clock times.
 *
 * Works with PHP 7.4 and 8.x, standard library only.
 */

declare(strict_types=1);

const GRAPH_NAME_PATTERN = '/^(sum)?([0-9]{8})-([A-Za-z0-9_-]+)\.txt$/D';
const GRAPH_BASE_PATTERN = '/^[A-Za-z0-9_-]{1,80}$/D';
// Ids as the logger writes them are short; a longer one is a broken line.
const GRAPH_RAW_LINE = '~^([0-9]{4}/[0-9]{2}/[0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}),([^,]{1,64}),([^,]{1,64}),([^,]{1,40})(?:,[^,]*)?$~D';
const GRAPH_SUM_LINE = '~^([0-9]{4}/[0-9]{2}/[0-9]{2}) ([0-9]{2}):([0-9]{2}),([^,]{1,64}),([^,]{1,64}),([^,]{1,40})$~D';

const GRAPH_DAY = 86400;
const GRAPH_HALF_HOUR = 1800;
const GRAPH_COLUMNS = 864;                  // plot columns across any range
const GRAPH_MAX_FILE_BYTES = 67108864;      // 64 MiB
const GRAPH_PEEK_BYTES = 262144;            // tail read of the previous day
const GRAPH_PEEK_SECONDS = 3600;            // how far into the neighbour days
const GRAPH_MAX_INTERPOLATION = 3600;       // longest span E0 is interpolated over
const GRAPH_MAX_SERIES = 48;                // (unit, sensor) pairs drawn; the meter's and config.php's always
const GRAPH_MAX_COUNTED_IDS = 10000;        // ids beyond that are counted up to this many
const GRAPH_MAX_OTHER_CHARTS = 40;
const GRAPH_RANGES = ['day', 'week', 'month', 'year'];

// SVG geometry, in viewBox units: plot area 864 x 200 at (60, 36).
const GRAPH_WIDTH = 952;
const GRAPH_HEIGHT = 268;
const GRAPH_LEFT = 60;
const GRAPH_TOP = 36;
const GRAPH_PLOT_WIDTH = 864;
const GRAPH_PLOT_HEIGHT = 200;

const GRAPH_COLORS = ['#1f6fb4', '#d2452b', '#2a9a3c', '#8a55b8', '#e08a12', '#7a5a48'];
// Meter registers that become kWh bars; the forward ones count what is
// imported from the grid, the reverse ones what is exported to it.
const GRAPH_ENERGY_SENSORS = ['BR,EA', 'BR,E0', 'BR,EB', 'BR,E3'];
const GRAPH_METER_SERIES = ['BR,E7', 'BR,E8R', 'BR,E8T'];
// Labels and units of the meter's series; config.php's `series` overrides.
const GRAPH_DEFAULT_LABELS = [
    'BR,E7' => ['Power', 'W'],
    'BR,E8R' => ['Current, phase R', 'A'],
    'BR,E8T' => ['Current, phase T', 'A'],
    'BR,E0' => ['Meter reading, import', 'kWh'],
    'BR,E3' => ['Meter reading, export', 'kWh'],
    'BR,EA' => ['Half-hour meter reading, import', 'kWh'],
    'BR,EB' => ['Half-hour meter reading, export', 'kWh'],
];

/** Escapes text for HTML content, attribute values and SVG text alike. */
function graph_h(string $text): string
{
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

/** A number with `$decimals` places, '.' as separator whatever the locale. */
function graph_num(float $value, int $decimals): string
{
    $text = sprintf('%.' . $decimals . 'F', $value);
    return $text === '-' . sprintf('%.' . $decimals . 'F', 0.0) ? substr($text, 1) : $text;
}

/** The settings of config.php (an empty array if it is missing). */
function graph_config(): array
{
    $path = __DIR__ . '/config.php';
    if (!is_file($path)) {
        return [];
    }
    $config = require $path;
    return is_array($config) ? $config : [];
}

function graph_data_dir(array $config): string
{
    if (isset($config['data_dir']) && is_string($config['data_dir']) && $config['data_dir'] !== '') {
        return rtrim($config['data_dir'], '/');
    }
    $env = getenv('KEI_DATA_DIR');
    return ($env === false || $env === '') ? __DIR__ . '/data' : rtrim($env, '/');
}

function graph_set_timezone(array $config): void
{
    // PHP 8.2 reports date.timezone "UTC" even when php.ini does not set
    // it, so UTC there cannot be told from "unset": it only wins last.
    $ini = (string) ini_get('date.timezone');
    $candidates = [
        $config['timezone'] ?? '',
        $ini === 'UTC' ? '' : $ini,
        ltrim((string) getenv('TZ'), ':'),
    ];
    // Debian and Raspberry Pi OS: /etc/localtime -> /usr/share/zoneinfo/Asia/Tokyo
    $link = @readlink('/etc/localtime');
    if (is_string($link) && preg_match('~zoneinfo/(.+)$~', $link, $match)) {
        $candidates[] = $match[1];
    }
    $known = timezone_identifiers_list();
    foreach ($candidates as $zone) {
        if (is_string($zone) && $zone !== '' && in_array($zone, $known, true)) {
            date_default_timezone_set($zone);
            return;
        }
    }
    date_default_timezone_set('UTC');
}

/** A query parameter: null if absent, false if not one string (date[]=x). */
function graph_param(string $name)
{
    if (!isset($_GET[$name])) {
        return null;
    }
    return is_string($_GET[$name]) ? $_GET[$name] : false;
}

/** 'YYYYMMDD' for YYYYMMDD or YYYY-MM-DD naming a real day, else null. */
function graph_parse_date(string $text): ?string
{
    if (!preg_match('/^([0-9]{4})(-?)([0-9]{2})\2([0-9]{2})$/D', $text, $m)
        || !checkdate((int) $m[3], (int) $m[4], (int) $m[1])) {
        return null;
    }
    return $m[1] . $m[3] . $m[4];
}

function graph_shift_day(string $ymd, int $days): string
{
    return gmdate('Ymd', gmmktime(0, 0, 0, (int) substr($ymd, 4, 2),
        (int) substr($ymd, 6, 2) + $days, (int) substr($ymd, 0, 4)));
}

/** 'YYYYMMDD' -> 'YYYY/MM/DD' (the date as written in the lines). */
function graph_slashed(string $ymd): string
{
    return substr($ymd, 0, 4) . '/' . substr($ymd, 4, 2) . '/' . substr($ymd, 6, 2);
}

function graph_dashed(string $ymd): string
{
    return substr($ymd, 0, 4) . '-' . substr($ymd, 4, 2) . '-' . substr($ymd, 6, 2);
}

/**
 * The data files by base and day: [base => [YYYYMMDD => ['raw' => true, 'sum' => true]]],
 * or null if the directory cannot be listed.  Names that do not match the
 * pattern (dot files, other extensions, anything odd) are never looked at.
 */
function graph_scan(string $dir): ?array
{
    $names = @scandir($dir);
    if ($names === false) {
        return null;
    }
    $found = [];
    foreach ($names as $name) {
        if (preg_match(GRAPH_NAME_PATTERN, $name, $m)) {
            $found[$m[3]][$m[2]][$m[1] === 'sum' ? 'sum' : 'raw'] = true;
        }
    }
    ksort($found, SORT_STRING);
    return $found;
}

/**
 * Path of a data file, built only from a checked day and base and checked
 * again against the name pattern (so a caller's mistake cannot escape).
 */
function graph_file_path(string $dir, string $kind, string $ymd, string $base): string
{
    $name = ($kind === 'sum' ? 'sum' : '') . $ymd . '-' . $base . '.txt';
    if (!preg_match(GRAPH_NAME_PATTERN, $name)) {
        throw new InvalidArgumentException('bad data file name');
    }
    return $dir . '/' . $name;
}

/**
 * The range a page shows: ['kind', 'start' (YYYYMMDD), 'days', 'prev' and
 * 'next' (a day in the neighbour ranges), 'title'].
 */
function graph_range(string $ymd, string $kind): array
{
    [$year, $month, $day] = [(int) substr($ymd, 0, 4), (int) substr($ymd, 4, 2), (int) substr($ymd, 6, 2)];
    $stamp = gmmktime(0, 0, 0, $month, $day, $year);
    if ($kind === 'week') {
        $start = graph_shift_day($ymd, 1 - (int) gmdate('N', $stamp));
        $range = ['start' => $start, 'days' => 7, 'prev' => graph_shift_day($start, -7),
            'next' => graph_shift_day($start, 7),
            'title' => 'Week of ' . graph_dashed($start)];
    } elseif ($kind === 'month') {
        $start = gmdate('Ymd', gmmktime(0, 0, 0, $month, 1, $year));
        $range = ['start' => $start, 'days' => (int) gmdate('t', $stamp),
            'prev' => gmdate('Ymd', gmmktime(0, 0, 0, $month - 1, 1, $year)),
            'next' => gmdate('Ymd', gmmktime(0, 0, 0, $month + 1, 1, $year)),
            'title' => gmdate('Y-m', $stamp)];
    } elseif ($kind === 'year') {
        $start = sprintf('%04d0101', $year);
        $range = ['start' => $start, 'days' => gmdate('L', $stamp) === '1' ? 366 : 365,
            'prev' => sprintf('%04d0101', $year - 1), 'next' => sprintf('%04d0101', $year + 1),
            'title' => (string) $year];
    } else {
        $kind = 'day';
        $range = ['start' => $ymd, 'days' => 1, 'prev' => graph_shift_day($ymd, -1),
            'next' => graph_shift_day($ymd, 1), 'title' => graph_dashed($ymd)];
    }
    $range['kind'] = $kind;
    $range['column'] = $range['days'] * GRAPH_DAY / GRAPH_COLUMNS;   // seconds per column
    return $range;
}

/** Label and unit of a series: config.php's `series`, the meter's defaults, or its ids. */
function graph_label(array $config, string $key): array
{
    $set = $config['series'][$key] ?? null;
    [$unit, $sensor] = explode(',', $key, 2);
    [$label, $y_unit] = GRAPH_DEFAULT_LABELS[$key] ?? ['Unit ' . $unit . ', sensor ' . $sensor, ''];
    if (is_array($set)) {
        $label = isset($set['label']) && is_string($set['label']) && $set['label'] !== '' ? $set['label'] : $label;
        $y_unit = isset($set['unit']) && is_string($set['unit']) ? $set['unit'] : $y_unit;
    }
    return [$label, $y_unit];
}

/** An empty accumulator for a range; graph_add() fills it. */
function graph_accumulator(array $range, array $priority): array
{
    return ['column' => $range['column'], 'span' => $range['days'] * GRAPH_DAY,
        'boundaries' => $range['days'] * GRAPH_DAY / GRAPH_HALF_HOUR,
        'series' => ['raw' => [], 'sum' => []], 'energy' => ['raw' => [], 'sum' => []],
        'keys' => [], 'priority' => array_flip($priority), 'dropped' => [], 'dropped_more' => false];
}

/**
 * One reading into the accumulator.  $time: seconds from the range start
 * (negative or past the end only for the neighbour days' energy registers).
 */
function graph_add(array &$acc, string $kind, string $key, int $time, float $value): void
{
    if ($key === 'BR,EA' || $key === 'BR,E0' || $key === 'BR,EB' || $key === 'BR,E3') {
        if (!isset($acc['energy'][$kind][$key])) {
            $acc['energy'][$kind][$key] = ['ft' => [], 'fv' => [], 'lt' => [], 'lv' => [],
                'n' => 0, 'tmin' => $time, 'tmax' => null, 'vlast' => 0.0];
        }
        $register = &$acc['energy'][$kind][$key];
        // Per half-hour cell [k * 30 min, (k + 1) * 30 min): its first and
        // last reading, which is all graph_at_boundaries() needs.
        $cell = (int) floor($time / GRAPH_HALF_HOUR);
        if (!isset($register['ft'][$cell]) || $time < $register['ft'][$cell]) {
            $register['ft'][$cell] = $time;
            $register['fv'][$cell] = $value;
        }
        if (!isset($register['lt'][$cell]) || $time >= $register['lt'][$cell]) {
            $register['lt'][$cell] = $time;
            $register['lv'][$cell] = $value;
        }
        if ($time >= 0 && $time < $acc['span']) {
            $register['n']++;
            $register['tmin'] = min($register['tmin'], $time);
            if ($register['tmax'] === null || $time >= $register['tmax']) {
                $register['tmax'] = $time;
                $register['vlast'] = $value;
            }
        }
        return;
    }
    if ($time < 0 || $time >= $acc['span']) {
        return;
    }
    if (!isset($acc['keys'][$key])) {
        if (count($acc['keys']) >= GRAPH_MAX_SERIES && !isset($acc['priority'][$key])) {
            // Bounded: a file with a million ids costs a counter, not a chart each.
            if (count($acc['dropped']) < GRAPH_MAX_COUNTED_IDS) {
                $acc['dropped'][$key] = true;
            } else {
                $acc['dropped_more'] = true;
            }
            return;
        }
        $acc['keys'][$key] = true;
    }
    if (!isset($acc['series'][$kind][$key])) {
        $acc['series'][$kind][$key] = ['n' => 0, 'tmin' => $time, 'tmax' => $time, 'vlast' => $value, 'cols' => []];
    }
    $series = &$acc['series'][$kind][$key];
    $series['n']++;
    if ($time < $series['tmin']) {
        $series['tmin'] = $time;
    }
    if ($time >= $series['tmax']) {
        $series['tmax'] = $time;
        $series['vlast'] = $value;
    }
    $column = (int) floor($time / $acc['column']);
    if (!isset($series['cols'][$column])) {
        // first (time, value), last, lowest, highest
        $series['cols'][$column] = [$time, $value, $time, $value, $time, $value, $time, $value];
        return;
    }
    $cell = &$series['cols'][$column];
    if ($time < $cell[0]) {
        $cell[0] = $time;
        $cell[1] = $value;
    }
    if ($time >= $cell[2]) {
        $cell[2] = $time;
        $cell[3] = $value;
    }
    if ($value < $cell[5] || ($value === $cell[5] && $time < $cell[4])) {
        $cell[4] = $time;
        $cell[5] = $value;
    }
    if ($value > $cell[7] || ($value === $cell[7] && $time < $cell[6])) {
        $cell[6] = $time;
        $cell[7] = $value;
    }
}

/**
 * Streams one file into the accumulator.
 *
 * $kind 'raw' or 'sum'; $ymd the file's day.  $limit (all optional):
 *   energy_only  keep only the energy registers (the neighbour days)
 *   from, until  keep readings with from <= seconds-of-day <= until
 *   offset       seconds from the range start to this file's midnight
 *   tail_bytes   read only the last this many bytes
 *   stop_after   stop at the first reading later than this (a file's head)
 * Returns ['lines' => n, 'skipped' => n, 'error' => null|text].
 */
function graph_read_file(string $path, string $kind, string $ymd, array &$acc, array $limit = []): array
{
    $result = ['lines' => 0, 'skipped' => 0, 'error' => null];
    $size = @filesize($path);
    if ($size === false) {
        $result['error'] = 'not readable';
        return $result;
    }
    $tail = $limit['tail_bytes'] ?? 0;
    $stop_after = $limit['stop_after'] ?? null;
    if ($size > GRAPH_MAX_FILE_BYTES && $tail === 0 && $stop_after === null) {
        $result['error'] = 'larger than 64 MiB, not read';
        return $result;
    }
    $handle = @fopen($path, 'rb');
    if ($handle === false) {
        $result['error'] = 'not readable';
        return $result;
    }
    if ($tail > 0 && $size > $tail) {
        fseek($handle, $size - $tail);
        fgets($handle);                     // the rest of a cut line
    }
    $energy_only = $limit['energy_only'] ?? false;
    $from = $limit['from'] ?? 0;
    $until = $limit['until'] ?? GRAPH_DAY;
    $offset = $limit['offset'] ?? 0;
    $day = graph_slashed($ymd);
    $is_raw = $kind === 'raw';
    $pattern = $is_raw ? GRAPH_RAW_LINE : GRAPH_SUM_LINE;

    // fgets with a length: a line without newlines cannot take all memory.
    while (($line = fgets($handle, 4096)) !== false) {
        $line = rtrim($line, "\r\n");
        if ($line === '') {
            continue;
        }
        $result['lines']++;
        if (strncmp($line, $day, 10) !== 0 || !preg_match($pattern, $line, $m)) {
            $result['skipped']++;
            continue;
        }
        if ($is_raw) {
            [, , $hour, $minute, $second, $unit, $sensor, $text] = $m;
        } else {
            [, , $hour, $minute, $unit, $sensor, $text] = $m;
            $second = '0';
        }
        $text = trim($text);
        if ((int) $hour > 23 || (int) $minute > 59 || (int) $second > 60 || !is_numeric($text)) {
            $result['skipped']++;
            continue;
        }
        $value = (float) $text;
        if (!is_finite($value)) {
            $result['skipped']++;
            continue;
        }
        $key = $unit . ',' . $sensor;
        $time = (int) $hour * 3600 + (int) $minute * 60 + (int) $second;
        if (!$is_raw && $key !== 'BR,EA' && $key !== 'BR,EB') {
            $time += 300;                   // the middle of the 10-minute window
        }
        if ($stop_after !== null && $time > $stop_after) {
            break;
        }
        if ($time < $from || $time > $until
            || ($energy_only && !in_array($key, GRAPH_ENERGY_SENSORS, true))) {
            continue;
        }
        graph_add($acc, $kind, $key, $time + $offset, $value);
    }
    fclose($handle);
    return $result;
}

/**
 * A series' drawn points, in time order: per column the first, lowest,
 * highest and last reading.  Returns a list of [time, value, starts_new_line].
 */
function graph_downsample(array $series, float $column_seconds): array
{
    $cols = $series['cols'];
    ksort($cols, SORT_NUMERIC);
    $n = $series['n'];
    $typical = $n > 1 ? ($series['tmax'] - $series['tmin']) / ($n - 1) : 0;
    $gap = max(2.5 * $typical, 2 * $column_seconds);
    $out = [];
    $previous_time = null;
    foreach ($cols as $cell) {
        $picks = [[$cell[0], $cell[1]], [$cell[4], $cell[5]], [$cell[6], $cell[7]], [$cell[2], $cell[3]]];
        usort($picks, function (array $a, array $b): int {
            return $a[0] <=> $b[0];
        });
        $breaks = $previous_time !== null && $picks[0][0] - $previous_time > $gap;
        $kept = [];
        foreach ($picks as $pick) {
            if (!in_array($pick, $kept, true)) {
                $kept[] = $pick;
            }
        }
        foreach ($kept as $k => [$time, $value]) {
            $out[] = [$time, $value, $breaks && $k === 0];
        }
        $previous_time = $cell[2];
    }
    return $out;
}

/**
 * Register value at each half-hour boundary of the range ([k => value]).
 * $exact_only: only readings stamped exactly on a boundary (EA/EB);
 * otherwise interpolate between the readings around it, if they are at most
 * GRAPH_MAX_INTERPOLATION apart.
 */
function graph_at_boundaries(array $register, bool $exact_only, int $boundaries): array
{
    $cells = array_keys($register['ft']);
    sort($cells, SORT_NUMERIC);
    $count = count($cells);
    $out = [];
    $i = 0;                                 // first cell at or after boundary k
    for ($k = 0; $k <= $boundaries; $k++) {
        while ($i < $count && $cells[$i] < $k) {
            $i++;
        }
        if ($i === $count) {
            break;
        }
        $boundary = $k * GRAPH_HALF_HOUR;
        $after = $register['ft'][$cells[$i]];
        if ($after === $boundary) {
            $out[$k] = $register['fv'][$cells[$i]];
        } elseif (!$exact_only && $i > 0) {
            $before = $register['lt'][$cells[$i - 1]];
            if ($after - $before <= GRAPH_MAX_INTERPOLATION) {
                $share = ($boundary - $before) / ($after - $before);
                $out[$k] = $register['lv'][$cells[$i - 1]] + $share * ($register['fv'][$cells[$i]] - $register['lv'][$cells[$i - 1]]);
            }
        }
    }
    return $out;
}

/**
 * kWh per half-hour of the range from the registers.  $sources: list of
 * [register, exact_only], best first; each boundary takes the first source
 * that knows it.  Returns [slot => [kwh, how]] where how is "exact" when both
 * ends came from exact sources, else "estimated".
 */
function graph_half_hours(array $sources, int $boundaries): array
{
    $known = [];
    foreach ($sources as [$register, $exact_only]) {
        foreach (graph_at_boundaries($register, $exact_only, $boundaries) as $k => $value) {
            if (!isset($known[$k])) {
                $known[$k] = [$value, $exact_only];
            }
        }
    }
    $slots = [];
    for ($k = 0; $k < $boundaries; $k++) {
        if (isset($known[$k], $known[$k + 1])) {
            $kwh = $known[$k + 1][0] - $known[$k][0];
            if ($kwh > -1e-9) {              // negative: the register wrapped or was reset
                $slots[$k] = [max(0.0, $kwh), $known[$k][1] && $known[$k + 1][1] ? 'exact' : 'estimated'];
            }
        }
    }
    return $slots;
}

/** Axis range and tick step: [low, high, step, decimals], ticks every step. */
function graph_axis(float $low, float $high): array
{
    if ($high - $low < 1e-9) {
        $pad = abs($low) > 1e-9 ? abs($low) * 0.1 : 1.0;
        $low -= $pad;
        $high += $pad;
    }
    $rough = ($high - $low) / 5;
    $magnitude = 10 ** floor(log10($rough));
    $step = 10 * $magnitude;
    foreach ([1, 2, 2.5, 5] as $factor) {
        if ($factor * $magnitude >= $rough) {
            $step = $factor * $magnitude;
            break;
        }
    }
    $decimals = (int) max(0, -floor(log10($step) + 1e-9) + (fmod($step / $magnitude, 1.0) > 0 ? 1 : 0));
    return [floor($low / $step + 1e-9) * $step, ceil($high / $step - 1e-9) * $step, $step, $decimals];
}

/** Time ticks for the x axis: list of [seconds from the range start, label]. */
function graph_time_ticks(array $range, int $x0, int $x1): array
{
    $ticks = [];
    if ($range['kind'] === 'day') {
        $hours = ($x1 - $x0) / 3600;
        $step = $hours > 12 ? 3 : ($hours > 6 ? 2 : 1);
        for ($hour = (int) ceil($x0 / 3600 / $step) * $step; $hour * 3600 <= $x1; $hour += $step) {
            $ticks[] = [$hour * 3600, sprintf('%02d:00', $hour)];
        }
        return $ticks;
    }
    $start = $range['start'];
    $every = $range['kind'] === 'week' ? 1 : ($range['kind'] === 'month' ? 5 : 0);
    for ($d = 0; $d <= $range['days']; $d++) {
        $ymd = graph_shift_day($start, $d);
        $stamp = gmmktime(0, 0, 0, (int) substr($ymd, 4, 2), (int) substr($ymd, 6, 2), (int) substr($ymd, 0, 4));
        if ($every === 0) {
            if (substr($ymd, 6, 2) === '01') {
                $ticks[] = [$d * GRAPH_DAY, gmdate('M', $stamp)];
            }
        } elseif ($d % $every === 0 && $d < $range['days']) {
            $ticks[] = [$d * GRAPH_DAY, $every === 1 ? gmdate('D j', $stamp) : gmdate('M j', $stamp)];
        }
    }
    return $ticks;
}

function graph_x(float $time, array $view): float
{
    return GRAPH_LEFT + ($time - $view['x0']) * GRAPH_PLOT_WIDTH / ($view['x1'] - $view['x0']);
}

/**
 * Opening of a chart: frame, grid, y ticks for [$low, $high], time ticks.
 * $view: ['range', 'x0', 'x1'] (seconds from the range start on the axis).
 */
function graph_svg_open(string $id, string $label, array $axis, string $y_unit, array $view): string
{
    [$low, $high, $step, $decimals] = $axis;
    $bottom = GRAPH_TOP + GRAPH_PLOT_HEIGHT;
    $right = GRAPH_LEFT + GRAPH_PLOT_WIDTH;
    $svg = sprintf('<svg class="chart" data-chart="%s" data-start="%s" data-x0="%d" data-x1="%d" '
        . 'data-unit-label="%s" viewBox="0 0 %d %d" role="img" aria-label="%s" '
        . 'xmlns="http://www.w3.org/2000/svg"><title>%s</title>',
        graph_h($id), graph_dashed($view['range']['start']), $view['x0'], $view['x1'], graph_h($y_unit),
        GRAPH_WIDTH, GRAPH_HEIGHT, graph_h($label), graph_h($label));
    $svg .= '<g class="grid">';
    $count = (int) round(($high - $low) / $step);
    for ($k = 0; $k <= $count; $k++) {
        $value = $low + $k * $step;
        $y = $bottom - ($value - $low) / ($high - $low) * GRAPH_PLOT_HEIGHT;
        $svg .= sprintf('<line x1="%d" y1="%.1F" x2="%d" y2="%.1F"%s/>'
            . '<text x="%d" y="%.1F" class="ylabel">%s</text>',
            GRAPH_LEFT, $y, $right, $y, abs($value) < $step / 1e6 && $low < 0 ? ' class="zero"' : '',
            GRAPH_LEFT - 6, $y + 4, graph_h(graph_num($value, $decimals)));
    }
    foreach (graph_time_ticks($view['range'], $view['x0'], $view['x1']) as [$time, $text]) {
        $x = graph_x($time, $view);
        $svg .= sprintf('<line x1="%.1F" y1="%d" x2="%.1F" y2="%d"/><text x="%.1F" y="%d" class="xlabel">%s</text>',
            $x, GRAPH_TOP, $x, $bottom, $x, $bottom + 18, graph_h($text));
    }
    $svg .= sprintf('</g><text x="%d" y="%d" class="yunit">%s</text>',
        GRAPH_LEFT - 6, GRAPH_TOP - 10, graph_h($y_unit));
    return $svg;
}

/** The legend entries, right-aligned above the plot. */
function graph_legend(array $entries): string
{
    $svg = '<g class="legend">';
    $x = GRAPH_LEFT + GRAPH_PLOT_WIDTH;
    foreach (array_reverse($entries) as [$text, $color, $class]) {
        $width = 8 + 6.5 * graph_length($text);
        $x -= $width + 26;
        $is_line = strpos($class, 'swatch-line') === 0;   // a line swatch is thin
        $svg .= sprintf('<rect x="%.1F" y="%d" width="18" height="%d" fill="%s" class="%s"/>'
            . '<text x="%.1F" y="%d">%s</text>',
            $x, $is_line ? GRAPH_TOP - 16 : GRAPH_TOP - 20, $is_line ? 3 : 10, $color, $class,
            $x + 24, GRAPH_TOP - 11, graph_h($text));
    }
    return $svg . '</g>';
}

/** Character count without depending on mbstring (not always installed). */
function graph_length(string $text): int
{
    return (int) preg_match_all('/./us', $text) ?: strlen($text);
}

/**
 * A line chart over the range.  $series: list of ['unit', 'sensor', 'kind'
 * (raw|avg), 'label', 'color', 'data' (graph_add's series)].  $with_zero
 * keeps 0 on the axis.
 */
function graph_line_chart(string $id, string $label, string $y_unit, array $series, bool $with_zero,
                          array $view): string
{
    $low = INF;
    $high = -INF;
    foreach ($series as $index => $one) {
        $series[$index]['vertices'] = graph_downsample($one['data'], $view['column']);
        foreach ($series[$index]['vertices'] as [, $value]) {
            $low = min($low, $value);
            $high = max($high, $value);
        }
    }
    if ($with_zero) {
        $low = min($low, 0.0);
        $high = max($high, 0.0);
    }
    $axis = graph_axis($low, $high);
    [$axis_low, $axis_high] = $axis;
    $scale = GRAPH_PLOT_HEIGHT / ($axis_high - $axis_low);
    $bottom = GRAPH_TOP + GRAPH_PLOT_HEIGHT;
    $svg = graph_svg_open($id, $label, $axis, $y_unit, $view);
    $legend = [];
    foreach ($series as $one) {
        $vertices = $one['vertices'];
        $d = [];
        $times = [];
        $values = [];
        $last = count($vertices) - 1;
        foreach ($vertices as $i => [$time, $value, $breaks]) {
            $starts = $i === 0 || $breaks;
            $d[] = sprintf('%s%.1F %.1F', $starts ? 'M' : 'L', graph_x($time, $view),
                $bottom - ($value - $axis_low) * $scale);
            if ($starts && ($i === $last || $vertices[$i + 1][2])) {
                $d[] = 'h0';                // a lone reading: a dot (round line cap)
            }
            $times[] = $time;
            $values[] = $value;
        }
        // data-t / data-v: the drawn readings themselves, for the pointer's
        // read-out (shortest exact decimal of each value).
        $svg .= sprintf('<path class="series %s" d="%s" stroke="%s" data-unit="%s" data-sensor="%s" '
            . 'data-kind="%s" data-label="%s" data-points="%d" data-vertices="%d" data-shift="%d" '
            . 'data-t="%s" data-v="%s"><title>%s</title></path>',
            $one['kind'], implode('', $d), $one['color'], graph_h($one['unit']), graph_h($one['sensor']),
            $one['kind'], graph_h($one['label']), $one['data']['n'], count($vertices),
            $one['kind'] === 'avg' ? 300 : 0, graph_h(implode(' ', $times)),
            graph_h(implode(' ', array_map('graph_exact', $values))), graph_h($one['label']));
        $legend[] = [$one['label'], $one['color'], $one['kind'] === 'raw' ? 'swatch-line raw' : 'swatch-line'];
    }
    return $svg . graph_legend($legend) . '</svg>';
}

/** The shortest decimal that reads back as exactly $value ("312", "21.25"). */
function graph_exact(float $value): string
{
    if ($value == floor($value) && abs($value) < 1e15) {
        return sprintf('%.0F', $value);
    }
    for ($digits = 1; $digits < 17; $digits++) {
        $text = sprintf('%.' . $digits . 'G', $value);
        if ((float) $text === $value) {
            return $text;
        }
    }
    return sprintf('%.17G', $value);
}

/**
 * Bar chart of kWh per slot (half-hour, day or month).  $directions:
 * [name => [color, bars]], bars [slot => [kwh, how, from, until, title]]
 * with from/until seconds from the range start.
 */
function graph_energy_chart(array $directions, array $view, string $title, array $tariff): string
{
    $high = 0.0;
    foreach ($directions as [, $bars]) {
        foreach ($bars as [$kwh]) {
            $high = max($high, $kwh);
        }
    }
    $axis = graph_axis(0.0, $high > 0 ? $high : 0.1);
    $scale = GRAPH_PLOT_HEIGHT / ($axis[1] - $axis[0]);
    $bottom = GRAPH_TOP + GRAPH_PLOT_HEIGHT;
    $svg = graph_svg_open('energy', $title, $axis, 'kWh', $view);
    $legend = [];
    $lane = 0;
    $lanes = count($directions);
    foreach ($directions as $name => [$color, $bars]) {
        $words = $name === 'forward' ? 'Imported from the grid' : 'Exported to the grid';
        foreach ($bars as $slot => [$kwh, $how, $from, $until, $when]) {
            if ($until <= $view['x0'] || $from >= $view['x1']) {
                continue;
            }
            $left = graph_x($from, $view);
            $width = graph_x($until, $view) - $left;
            $bar_width = max(0.5, ($width - 2) / $lanes);
            $height = $kwh * $scale;
            $price = $tariff[$name === 'forward' ? 'import' : 'export'];
            $cost = $price !== null ? ', ' . graph_num($kwh * $price, 1) . ' ' . $tariff['currency'] : '';
            $svg .= sprintf('<rect class="bar %s" x="%.1F" y="%.1F" width="%.1F" height="%.1F" fill="%s" '
                . 'data-direction="%s" data-slot="%d" data-kwh="%s"><title>%s %s: %s kWh%s (%s)</title></rect>',
                $how, $left + 1 + $lane * $bar_width, $bottom - $height, $bar_width, $height, $color,
                graph_h($name), $slot, graph_num($kwh, 4), graph_h($words), graph_h($when),
                graph_num($kwh, 3), graph_h($cost), $how);
        }
        $legend[] = [$words, $color, 'swatch'];
        $lane++;
    }
    return $svg . graph_legend($legend) . '</svg>';
}

/** The page's URL with some parameters changed. */
function graph_url(array $params): string
{
    return '?' . http_build_query($params, '', '&', PHP_QUERY_RFC3986);
}

/** config.php's tariff: ['import' => yen per kWh or null, 'export' => ..., 'currency' => text]. */
function graph_tariff(array $config): array
{
    $set = isset($config['tariff']) && is_array($config['tariff']) ? $config['tariff'] : [];
    $price = function ($value): ?float {
        return (is_int($value) || is_float($value)) && is_finite((float) $value) && $value >= 0 ? (float) $value : null;
    };
    return ['import' => $price($set['import'] ?? null), 'export' => $price($set['export'] ?? null),
        'currency' => isset($set['currency']) && is_string($set['currency']) ? $set['currency'] : 'yen'];
}

/** Everything the page shows for one range and base. */
function graph_build(string $dir, array $range, string $base, bool $with_raw, array $config, array $found): array
{
    $configured = isset($config['series']) && is_array($config['series']) ? array_keys($config['series']) : [];
    $acc = graph_accumulator($range, array_merge(GRAPH_METER_SERIES, array_map('strval', $configured)));
    $kinds = $range['kind'] === 'day' && $with_raw ? ['sum', 'raw'] : ['sum'];
    $days = $found[$base] ?? [];
    $files = [];
    foreach ($kinds as $kind) {
        for ($d = 0; $d < $range['days']; $d++) {
            $ymd = graph_shift_day($range['start'], $d);
            if (!isset($days[$ymd][$kind])) {
                continue;
            }
            $path = graph_file_path($dir, $kind, $ymd, $base);
            $status = graph_read_file($path, $kind, $ymd, $acc, ['offset' => $d * GRAPH_DAY]);
            $files[] = ['name' => basename($path), 'kind' => $kind] + $status;
        }
        if (!$files) {
            continue;
        }
        // The neighbour days: the energy registers near midnight only.
        $previous = graph_shift_day($range['start'], -1);
        if (isset($days[$previous][$kind])) {
            graph_read_file(graph_file_path($dir, $kind, $previous, $base), $kind, $previous, $acc, [
                'energy_only' => true, 'from' => GRAPH_DAY - GRAPH_PEEK_SECONDS,
                'offset' => -GRAPH_DAY, 'tail_bytes' => GRAPH_PEEK_BYTES]);
        }
        $next = graph_shift_day($range['start'], $range['days']);
        if (isset($days[$next][$kind])) {
            graph_read_file(graph_file_path($dir, $kind, $next, $base), $kind, $next, $acc, [
                'energy_only' => true, 'until' => GRAPH_PEEK_SECONDS,
                'offset' => $range['days'] * GRAPH_DAY, 'stop_after' => GRAPH_PEEK_SECONDS + 600]);
        }
    }

    // The time axis: the whole range, but a day only over the hours it has.
    $view = ['range' => $range, 'x0' => 0, 'x1' => $range['days'] * GRAPH_DAY, 'column' => $range['column']];
    if ($range['kind'] === 'day') {
        $first = null;
        $last = null;
        foreach (['raw', 'sum'] as $kind) {
            foreach (array_merge($acc['series'][$kind], $acc['energy'][$kind]) as $one) {
                if ($one['n'] > 0) {
                    $first = $first === null ? $one['tmin'] : min($first, $one['tmin']);
                    $last = $last === null ? $one['tmax'] : max($last, $one['tmax']);
                }
            }
        }
        if ($first !== null) {
            $view['x0'] = (int) floor($first / 3600) * 3600;
            $view['x1'] = (int) min(GRAPH_DAY, ceil(($last + 1) / 3600) * 3600);
        }
    }

    // Line charts: the meter's power and currents, then every other series.
    $keys = array_keys($acc['keys']);
    sort($keys, SORT_STRING);
    $power_label = graph_label($config, 'BR,E7');
    $groups = [
        'power' => [$power_label[0] . ' (' . $power_label[1] . ')', $power_label[1], ['BR,E7'], true],
        'current' => ['Phase currents (' . graph_label($config, 'BR,E8R')[1] . ')',
            graph_label($config, 'BR,E8R')[1], ['BR,E8R', 'BR,E8T'], true],
    ];
    $others = array_values(array_diff($keys, GRAPH_METER_SERIES));
    $hidden = max(0, count($others) - GRAPH_MAX_OTHER_CHARTS) + count($acc['dropped']);
    foreach (array_slice($others, 0, GRAPH_MAX_OTHER_CHARTS) as $number => $key) {
        [$label, $y_unit] = graph_label($config, $key);
        $groups['other-' . $number] = [$label . ($y_unit !== '' ? ' (' . $y_unit . ')' : ''), $y_unit, [$key], false];
    }
    $charts = [];
    foreach ($groups as $id => [$label, $y_unit, $members, $with_zero]) {
        $series = [];
        foreach ($members as $index => $key) {
            [$unit, $sensor] = explode(',', $key, 2);
            $color = GRAPH_COLORS[$index % count(GRAPH_COLORS)];
            $name = count($members) > 1 ? $sensor : graph_label($config, $key)[0];
            foreach (['raw' => 'raw', 'sum' => '10-min average'] as $kind => $what) {
                if (isset($acc['series'][$kind][$key])) {
                    $series[] = ['unit' => $unit, 'sensor' => $sensor, 'kind' => $kind === 'sum' ? 'avg' : 'raw',
                        'label' => $name . ' ' . $what, 'color' => $color, 'data' => $acc['series'][$kind][$key]];
                }
            }
        }
        if ($series) {
            $charts[] = ['id' => $id, 'label' => $label,
                'svg' => graph_line_chart($id, $label, $y_unit, $series, $with_zero, $view),
                'legend' => array_map(function (array $one): array {
                    return [$one['label'], $one['color'] . ($one['kind'] === 'raw' ? '; opacity: 0.45' : '')];
                }, $series)];
        }
    }

    // Energy, best source first; bars per half-hour, day or month.
    $boundaries = (int) $acc['boundaries'];
    $energy = [];
    foreach (['forward' => ['BR,EA', 'BR,E0', '#2a7fbf'], 'reverse' => ['BR,EB', 'BR,E3', '#e0a020']]
             as $direction => [$fixed, $cumulative, $color]) {
        $sources = [];
        foreach ([[$fixed, 'raw', true], [$fixed, 'sum', true], [$cumulative, 'raw', false],
                  [$cumulative, 'sum', false]] as [$key, $kind, $exact_only]) {
            if (isset($acc['energy'][$kind][$key])) {
                $sources[] = [$acc['energy'][$kind][$key], $exact_only];
            }
        }
        $slots = graph_half_hours($sources, $boundaries);
        if ($slots) {
            $energy[$direction] = [$color, graph_energy_bars($slots, $range), $slots];
        }
    }

    // Tiles: the latest reading of each series in the range (raw before averages).
    $tiles = [];
    foreach (array_merge(GRAPH_METER_SERIES, ['BR,E0', 'BR,E3'], $others) as $key) {
        foreach (['raw', 'sum'] as $kind) {
            $one = $acc['series'][$kind][$key] ?? $acc['energy'][$kind][$key] ?? null;
            if ($one === null || $one['n'] === 0) {
                continue;
            }
            $shift = $kind === 'sum' ? 300 : 0;       // averages: their window's start
            $typical = $one['n'] > 1 ? ($one['tmax'] - $one['tmin']) / ($one['n'] - 1) : ($kind === 'sum' ? 600 : 60);
            $tiles[] = ['key' => $key, 'kind' => $kind, 'time' => $one['tmax'] - $shift, 'value' => $one['vlast'],
                'stale_after' => max(120, 3 * $typical + ($kind === 'sum' ? 600 : 0))];
            break;
        }
    }
    return ['files' => $files, 'charts' => $charts, 'energy' => $energy, 'hidden' => $hidden,
        'hidden_more' => $acc['dropped_more'], 'tiles' => $tiles, 'view' => $view];
}

/**
 * Bars for the range from half-hour slots: the slots themselves for a day,
 * daily sums for a week or month, monthly sums for a year.
 * Returns [slot => [kwh, how, from, until, label]].
 */
function graph_energy_bars(array $slots, array $range): array
{
    if ($range['kind'] === 'day') {
        $bars = [];
        foreach ($slots as $k => [$kwh, $how]) {
            $bars[$k] = [$kwh, $how, $k * GRAPH_HALF_HOUR, ($k + 1) * GRAPH_HALF_HOUR,
                sprintf('%02d:%02d-%02d:%02d', intdiv($k, 2), ($k % 2) * 30, intdiv($k + 1, 2), (($k + 1) % 2) * 30)];
        }
        return $bars;
    }
    $groups = [];
    foreach ($slots as $k => [$kwh, $how]) {
        $day = intdiv($k, 48);
        $ymd = graph_shift_day($range['start'], $day);
        $group = $range['kind'] === 'year' ? (int) substr($ymd, 4, 2) - 1 : $day;
        if (!isset($groups[$group])) {
            $groups[$group] = [0.0, 'exact', 0, 0, ''];
        }
        $groups[$group][0] += $kwh;
        if ($how !== 'exact') {
            $groups[$group][1] = 'estimated';
        }
        $groups[$group][2]++;
    }
    $bars = [];
    foreach ($groups as $group => [$kwh, $how, $count]) {
        if ($range['kind'] === 'year') {
            $year = (int) substr($range['start'], 0, 4);
            $first = (int) ((gmmktime(0, 0, 0, $group + 1, 1, $year) - gmmktime(0, 0, 0, 1, 1, $year)));
            $until = (int) ((gmmktime(0, 0, 0, $group + 2, 1, $year) - gmmktime(0, 0, 0, 1, 1, $year)));
            $label = gmdate('Y-m', gmmktime(0, 0, 0, $group + 1, 1, $year));
            $of = intdiv($until - $first, GRAPH_HALF_HOUR);
        } else {
            $first = $group * GRAPH_DAY;
            $until = $first + GRAPH_DAY;
            $label = graph_dashed(graph_shift_day($range['start'], $group));
            $of = 48;
        }
        $bars[$group] = [$kwh, $how, $first, $until, $label . ' (' . $count . ' of ' . $of . ' half-hours)'];
    }
    ksort($bars);
    return $bars;
}

/** "12 s", "5 min", "3 h", "2 d". */
function graph_age(int $seconds): string
{
    if ($seconds < 120) {
        return max(0, $seconds) . ' s';
    }
    if ($seconds < 7200) {
        return intdiv($seconds, 60) . ' min';
    }
    if ($seconds < 2 * GRAPH_DAY) {
        return intdiv($seconds, 3600) . ' h';
    }
    return intdiv($seconds, GRAPH_DAY) . ' d';
}

/** The page for a limit PHP hit (memory, time), instead of a blank 500. */
function graph_fatal_page(): void
{
    $error = error_get_last();
    if ($error === null || !in_array($error['type'], [E_ERROR, E_CORE_ERROR, E_COMPILE_ERROR, E_USER_ERROR], true)) {
        return;
    }
    $GLOBALS['graph_reserve'] = null;           // room to answer in
    while (ob_get_level() > 0) {
        ob_end_clean();
    }
    $what = stripos($error['message'], 'memory') !== false ? 'the memory limit (memory_limit '
        . ini_get('memory_limit') . ')' : (stripos($error['message'], 'time') !== false
        ? 'the time limit (max_execution_time ' . ini_get('max_execution_time') . ' s)' : 'an internal error');
    if (!headers_sent()) {
        // A status line, not http_response_code(): PHP set "500" as a line after the fatal error.
        header('HTTP/1.1 503 Service Unavailable', true, 503);
        header('Content-Type: text/html; charset=utf-8');
        header("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'");
    }
    echo '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>kei - page too large</title>'
        . '</head><body><p class="problem" id="limit">The graph page stopped at ' . graph_h($what)
        . ' while reading the data files.  Choose a shorter range, the averages only (raw=0), '
        . 'or raise the limit in php.ini.</p><p><a href="?">Today</a></p></body></html>';
}

// ---------------------------------------------------------------- the page

// A memory or time limit hit while reading answers a message, not a blank 500.
ob_start();
$graph_reserve = str_repeat(' ', 262144);
register_shutdown_function('graph_fatal_page');

$config = graph_config();
graph_set_timezone($config);
$data_dir = graph_data_dir($config);

$problems = [];
$date_param = graph_param('date');
$base_param = graph_param('base');
$range_param = graph_param('range');
// An empty date (the form's field left blank) means today.
$ymd = $date_param === null || $date_param === '' ? date('Ymd')
    : ($date_param === false ? null : graph_parse_date($date_param));
if ($ymd === null) {
    $problems[] = 'The date must be a real day written YYYYMMDD or YYYY-MM-DD.';
}
if ($base_param === false || ($base_param !== null && !preg_match(GRAPH_BASE_PATTERN, $base_param))) {
    $problems[] = 'The base name may only hold letters, digits, "_" and "-".';
}
if ($range_param === false || ($range_param !== null && !in_array($range_param, GRAPH_RANGES, true))) {
    $problems[] = 'The range must be day, week, month or year.';
}
$range_kind = is_string($range_param) && in_array($range_param, GRAPH_RANGES, true) ? $range_param : 'day';
$with_raw = graph_param('raw') !== '0';
$range = $ymd !== null ? graph_range($ymd, $range_kind) : null;

$found = $problems ? [] : graph_scan($data_dir);
$base = null;
if (!$problems && $found !== null) {
    if ($base_param !== null) {
        $base = $base_param;
    } else {
        foreach ($found as $name => $days) {
            if (isset($days[$ymd])) {
                $base = (string) $name;
                break;
            }
        }
        if ($base === null && $found) {
            $base = (string) array_key_first($found);
        }
    }
}
$page = ($base !== null && $range !== null && !$problems)
    ? graph_build($data_dir, $range, $base, $with_raw, $config, $found) : null;
$tariff = graph_tariff($config);
$today = date('Ymd');
$shows_today = $range !== null && $today >= $range['start'] && $today <= graph_shift_day($range['start'], $range['days'] - 1);
$refresh = (int) ($config['refresh_seconds'] ?? 60);
$nonce = base64_encode(random_bytes(12));

http_response_code($problems ? 400 : 200);
header('Content-Type: text/html; charset=utf-8');
// Nothing on this page may load from anywhere: a LAN box may have no
// internet.  The one inline script runs by its nonce; nothing else can.
header("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    . "script-src 'nonce-" . $nonce . "'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'");
header('X-Content-Type-Options: nosniff');
header('Referrer-Policy: no-referrer');

$title = 'kei' . ($base !== null ? ' - ' . $base : '') . ($range !== null ? ' - ' . $range['title'] : '');
// Links keep the range and raw choice; the defaults stay out of the URL.
$keep = ['range' => $range_kind === 'day' ? null : $range_kind, 'raw' => $with_raw ? null : '0'];
?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<?php if ($shows_today && $refresh > 0 && !$problems): ?>
<meta http-equiv="refresh" content="<?= $refresh ?>">
<?php endif ?>
<link rel="icon" href="data:,">
<title><?= graph_h($title) ?></title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1000px; padding: 0 12px 40px; color: #222; }
header { display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: baseline; padding: 10px 0; border-bottom: 1px solid #ddd; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 16px; margin: 22px 0 2px; }
nav a { margin-right: 10px; }
nav.ranges a { padding: 2px 8px; border: 1px solid #bbb; border-radius: 4px; text-decoration: none; margin-right: 4px; }
nav.ranges a.current { background: #1f6fb4; color: #fff; border-color: #1f6fb4; }
form { display: inline-flex; gap: 6px; flex-wrap: wrap; align-items: center; }
.note { color: #555; font-size: 13px; margin: 6px 0; }
.problem { color: #a00; font-weight: bold; }
#now { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; margin: 12px 0; }
.tile { border: 1px solid #ddd; border-radius: 6px; padding: 6px 10px; background: #fafafa; }
.tile .name { font-size: 12px; color: #555; display: block; }
.tile .value { font-size: 22px; font-weight: 600; display: block; }
.tile .age { font-size: 12px; color: #555; }
.tile.stale { background: #f3f3f3; color: #888; }
.tile.stale .value { color: #888; }
.tile.stale .age { color: #a00; }
.chart-box { position: relative; }
svg.chart { width: 100%; height: auto; display: block; background: #fff; touch-action: pan-y; }
svg.chart .grid line { stroke: #e4e4e4; stroke-width: 1; }
svg.chart .grid line.zero { stroke: #999; }
svg.chart text { font: 12px system-ui, sans-serif; fill: #444; }
svg.chart .ylabel, svg.chart .yunit { text-anchor: end; }
svg.chart .xlabel { text-anchor: middle; }
svg.chart path.series { fill: none; stroke-linejoin: round; stroke-linecap: round; }
svg.chart path.raw { stroke-width: 1; stroke-opacity: 0.45; }
svg.chart path.avg { stroke-width: 2.2; }
svg.chart rect.raw { opacity: 0.45; }
svg.chart rect.bar.estimated { opacity: 0.6; }
svg.chart circle.marker { fill: #fff; stroke: #222; stroke-width: 2; }
.readout { position: absolute; pointer-events: none; background: rgba(255,255,255,0.95); border: 1px solid #888;
  border-radius: 4px; padding: 2px 6px; font-size: 13px; white-space: nowrap; }
.totals { font-size: 14px; margin: 4px 0; }
.legend-list { display: none; font-size: 13px; margin: 2px 0; }
.legend-list span { margin-right: 12px; white-space: nowrap; }
.legend-list i { display: inline-block; width: 14px; height: 4px; margin-right: 4px; vertical-align: middle; }
.totals span { display: block; }
@media (max-width: 600px) {
  body { font-size: 14px; padding: 0 6px 30px; }
  svg.chart text { font-size: 19px; }
  svg.chart .legend { display: none; }
  .legend-list { display: block; }
  svg.chart path.raw { stroke-width: 2; }
  svg.chart path.avg { stroke-width: 3.5; }
  svg.chart .legend text { font-size: 20px; }
  .tile .value { font-size: 19px; }
}
</style>
</head>
<body>
<header>
<h1>kei</h1>
<?php if ($range !== null): ?>
<nav>
<a rel="prev" href="<?= graph_h(graph_url(['date' => $range['prev'], 'base' => $base] + $keep)) ?>">&larr; <?= graph_h($range_kind === 'day' ? graph_dashed($range['prev']) : 'previous ' . $range_kind) ?></a>
<strong><?= graph_h($range_kind === 'day' ? graph_dashed($ymd) : $range['title']) ?></strong>
<a rel="next" href="<?= graph_h(graph_url(['date' => $range['next'], 'base' => $base] + $keep)) ?>"><?= graph_h($range_kind === 'day' ? graph_dashed($range['next']) : 'next ' . $range_kind) ?> &rarr;</a>
<?php if ($range_kind === 'day'): ?>
<a href="<?= graph_h(graph_url(['date' => $ymd, 'base' => $base, 'raw' => $with_raw ? '0' : null])) ?>"><?= $with_raw ? 'averages only' : 'with raw readings' ?></a>
<?php endif ?>
</nav>
<nav class="ranges">
<?php foreach (GRAPH_RANGES as $one): ?>
<a data-range="<?= $one ?>"<?= $one === $range_kind ? ' class="current" aria-current="page"' : '' ?> href="<?= graph_h(graph_url(['date' => $ymd, 'base' => $base, 'range' => $one === 'day' ? null : $one, 'raw' => $with_raw ? null : '0'])) ?>"><?= ucfirst($one) ?></a>
<?php endforeach ?>
</nav>
<?php endif ?>
<form method="get" action="">
<?php if ($found): ?>
<label>Logger <select name="base">
<?php foreach (array_keys($found) as $name): ?>
<option value="<?= graph_h((string) $name) ?>"<?= (string) $name === $base ? ' selected' : '' ?>><?= graph_h((string) $name) ?> (<?= count($found[$name]) ?> day<?= count($found[$name]) === 1 ? '' : 's' ?>)</option>
<?php endforeach ?>
</select></label>
<?php endif ?>
<label>Day <input type="date" name="date" value="<?= graph_h($ymd !== null ? graph_dashed($ymd) : '') ?>"></label>
<?php if ($range_kind !== 'day'): ?><input type="hidden" name="range" value="<?= graph_h($range_kind) ?>"><?php endif ?>
<?php if (!$with_raw): ?><input type="hidden" name="raw" value="0"><?php endif ?>
<button type="submit">Show</button>
</form>
</header>
<main data-memory-peak="<?= memory_get_peak_usage() ?>">
<?php foreach ($problems as $problem): ?>
<p class="problem"><?= graph_h($problem) ?> <a href="?">Today</a></p>
<?php endforeach ?>
<?php if (!$problems && $found === null): ?>
<p class="problem">The data directory cannot be read: check data_dir in config.php (or KEI_DATA_DIR).</p>
<?php elseif (!$problems && !$found): ?>
<p class="note">No data files yet (names like sumYYYYMMDD-name.txt).</p>
<?php elseif ($page !== null && !$page['files']): ?>
<p class="note" id="no-data">No files for <?= graph_h($range['title']) ?> with base <?= graph_h($base) ?>.</p>
<?php elseif ($page !== null): ?>
<?php if ($page['tiles']): ?>
<section id="now" aria-label="Latest values">
<?php $now = time(); foreach ($page['tiles'] as $tile): ?>
<?php
    [$label, $y_unit] = graph_label($config, $tile['key']);
    [$tile_unit, $tile_sensor] = explode(',', $tile['key'], 2);
    $day = graph_shift_day($range['start'], intdiv($tile['time'], GRAPH_DAY));
    $seconds = $tile['time'] % GRAPH_DAY;
    $stamp = mktime(intdiv($seconds, 3600), intdiv($seconds % 3600, 60), $seconds % 60,
        (int) substr($day, 4, 2), (int) substr($day, 6, 2), (int) substr($day, 0, 4));
    $age = $now - $stamp;
    $stale = $age > $tile['stale_after'];
    // A reading as written; an average to 2 decimals.
    $value = $tile['key'] === 'BR,E7' ? abs($tile['value']) : $tile['value'];
    $shown = $tile['kind'] === 'raw' ? graph_exact($value) : rtrim(rtrim(graph_num($value, 2), '0'), '.');
    if ($tile['key'] === 'BR,E7') {    // the sign of the meter's power is the direction
        $label = $tile['value'] < 0 ? 'Exporting to the grid' : 'Importing from the grid';
    }
?>
<div class="tile<?= $stale ? ' stale' : '' ?>" data-unit="<?= graph_h($tile_unit) ?>" data-sensor="<?= graph_h($tile_sensor) ?>" data-value="<?= graph_h(graph_exact($tile['value'])) ?>" data-time="<?= graph_h(graph_dashed($day) . ' ' . sprintf('%02d:%02d:%02d', intdiv($seconds, 3600), intdiv($seconds % 3600, 60), $seconds % 60)) ?>" data-age="<?= $age ?>">
<span class="name"><?= graph_h($label) ?><?= $tile['kind'] === 'sum' ? ' (10-min average)' : '' ?></span>
<span class="value"><?= graph_h($shown) ?> <?= graph_h($y_unit) ?></span>
<span class="age" title="<?= graph_h(graph_dashed($day)) ?> <?= sprintf('%02d:%02d:%02d', intdiv($seconds, 3600), intdiv($seconds % 3600, 60), $seconds % 60) ?>"><?= $stale ? 'stale: ' : '' ?><?= graph_h(graph_age($age)) ?> ago</span>
</div>
<?php endforeach ?>
</section>
<?php endif ?>
<p class="note files">Files:
<?php if (count($page['files']) > 7): ?>
<?php $lines = array_sum(array_column($page['files'], 'lines')); $skipped = array_sum(array_column($page['files'], 'skipped')); ?>
<span class="file-summary"><?= count($page['files']) ?> files of 10-minute averages (<?= $lines ?> lines<?= $skipped ? ', ' . $skipped . ' skipped' : '' ?>)</span>
<?php else: ?>
<?php foreach ($page['files'] as $file): ?>
<span class="file" data-kind="<?= graph_h($file['kind']) ?>"><?= graph_h($file['name']) ?> (<?= (int) $file['lines'] ?> lines<?= $file['skipped'] ? ', ' . (int) $file['skipped'] . ' skipped' : '' ?><?= $file['error'] !== null ? ', ' . graph_h($file['error']) : '' ?>)</span>
<?php endforeach ?>
<?php endif ?>
</p>
<?php if ($page['energy']): ?>
<?php $per = ['day' => 'half-hour', 'week' => 'day', 'month' => 'day', 'year' => 'month'][$range_kind]; ?>
<section>
<h2>Energy per <?= $per ?> (kWh)</h2>
<p class="totals">
<?php foreach ($page['energy'] as $direction => [$color, $bars, $slots]): ?>
<?php
    $total = array_sum(array_column($slots, 0));
    $exact = count(array_filter($slots, function (array $slot): bool { return $slot[1] === 'exact'; }));
    $price = $tariff[$direction === 'forward' ? 'import' : 'export'];
    $of = 48 * $range['days'];
?>
<span data-day-total-<?= graph_h($direction) ?>="<?= graph_num($total, 4) ?>" data-slots="<?= count($slots) ?>"<?= $price !== null ? ' data-cost="' . graph_num($total * $price, 2) . '"' : '' ?>><?= $direction === 'forward' ? 'Imported from the grid' : 'Exported to the grid' ?>: <strong><?= graph_num($total, 3) ?> kWh</strong><?php if ($price !== null): ?> = <strong class="cost"><?= graph_num($total * $price, 0) ?> <?= graph_h($tariff['currency']) ?></strong> at <?= graph_h(graph_exact($price)) ?> <?= graph_h($tariff['currency']) ?>/kWh<?php endif ?> in <?= count($slots) ?> of <?= $of ?> half-hours<?= count($slots) ? ' (' . $exact . ' from the meter\'s half-hour values, ' . (count($slots) - $exact) . ' estimated)' : '' ?>.</span>
<?php endforeach ?>
</p>
<p class="legend-list"><?php foreach ($page['energy'] as $direction => [$color]): ?><span><i style="background: <?= graph_h($color) ?>"></i><?= $direction === 'forward' ? 'Imported from the grid' : 'Exported to the grid' ?></span><?php endforeach ?></p>
<div class="chart-box"><?= graph_energy_chart(array_map(function (array $one): array { return [$one[0], $one[1]]; }, $page['energy']), $page['view'], 'Energy per ' . $per . ' (kWh)', $tariff) ?></div>
</section>
<?php endif ?>
<?php foreach ($page['charts'] as $chart): ?>
<section>
<h2><?= graph_h($chart['label']) ?></h2>
<?php if ($chart['id'] === 'power'): ?>
<p class="note">Above zero: importing from the grid.  Below zero: exporting to the grid (e.g. from solar panels).</p>
<?php endif ?>
<div class="chart-box"><?= $chart['svg'] ?></div>
<p class="legend-list"><?php foreach ($chart['legend'] as [$text, $color]): ?><span><i style="background: <?= graph_h($color) ?>"></i><?= graph_h($text) ?></span><?php endforeach ?></p>
</section>
<?php endforeach ?>
<?php if ($page['hidden']): ?>
<p class="note" id="hidden-series"><?= $page['hidden_more'] ? 'More than ' : '' ?><?= (int) $page['hidden'] ?> more series not drawn (at most <?= GRAPH_MAX_SERIES ?> are read; name the ones you want in config.php's series).</p>
<?php endif ?>
<?php endif ?>
</main>
<script nonce="<?= graph_h($nonce) ?>">
// Progressive enhancement: the time and value of the reading nearest the
// pointer (or finger).  The page is complete without it.
(function () {
  'use strict';
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function when(start, seconds) {
    var p = start.split('-');
    var d = new Date(Date.UTC(+p[0], +p[1] - 1, +p[2]) + seconds * 1000);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
      pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
  }
  function series(path) {
    if (!path._kei) {
      var t = path.getAttribute('data-t'), v = path.getAttribute('data-v');
      path._kei = {t: t ? t.split(' ').map(Number) : [], v: v ? v.split(' ') : []};
    }
    return path._kei;
  }
  function nearest(list, x) {
    var lo = 0, hi = list.length - 1;
    while (hi - lo > 1) { var mid = (lo + hi) >> 1; if (list[mid] < x) { lo = mid; } else { hi = mid; } }
    return Math.abs(list[lo] - x) <= Math.abs(list[hi] - x) ? lo : hi;
  }
  function show(svg, event) {
    var box = svg.getBoundingClientRect();
    var x0 = +svg.getAttribute('data-x0'), x1 = +svg.getAttribute('data-x1');
    var vb = svg.viewBox.baseVal, scale = box.width / vb.width;
    var time = x0 + ((event.clientX - box.left) / scale - 60) * (x1 - x0) / 864;
    var best = null;
    Array.prototype.forEach.call(svg.querySelectorAll('path.series'), function (path) {
      var s = series(path);
      if (!s.t.length) { return; }
      var i = nearest(s.t, time);
      var px = 60 + (s.t[i] - x0) * 864 / (x1 - x0);
      var py = pointY(path, i);
      var dist = Math.abs(px * scale + box.left - event.clientX) + Math.abs(py * scale + box.top - event.clientY) / 4;
      if (best === null || dist < best.dist) { best = {dist: dist, path: path, i: i, px: px, py: py}; }
    });
    var readout = svg.parentNode.querySelector('.readout');
    var marker = svg.querySelector('circle.marker');
    if (!best) { return; }
    var s = series(best.path);
    var shift = +best.path.getAttribute('data-shift');
    var text = best.path.getAttribute('data-label') + ': ' + s.v[best.i] + ' ' + svg.getAttribute('data-unit-label') +
      ' at ' + when(svg.getAttribute('data-start'), s.t[best.i] - shift);
    if (!readout) {
      readout = document.createElement('div');
      readout.className = 'readout';
      svg.parentNode.appendChild(readout);
    }
    if (!marker) {
      marker = document.createElementNS('http://www.w3.org/2000/svg', 'circle');
      marker.setAttribute('class', 'marker');
      marker.setAttribute('r', '4');
      svg.appendChild(marker);
    }
    marker.setAttribute('cx', best.px);
    marker.setAttribute('cy', best.py);
    readout.textContent = text;
    readout.setAttribute('data-value', s.v[best.i]);
    readout.setAttribute('data-time', when(svg.getAttribute('data-start'), s.t[best.i] - shift));
    readout.setAttribute('data-sensor', best.path.getAttribute('data-sensor'));
    readout.setAttribute('data-kind', best.path.getAttribute('data-kind'));
    var left = best.px * scale + 10;
    readout.style.left = Math.max(0, Math.min(left, box.width - readout.offsetWidth)) + 'px';
    readout.style.top = Math.max(0, best.py * scale - 34) + 'px';
  }
  // The y of vertex i: from the path's own commands, so it is what is drawn.
  function pointY(path, i) {
    if (!path._keiY) {
      path._keiY = (path.getAttribute('d').match(/[ML][-0-9.]+ [-0-9.]+/g) || []).map(function (c) {
        return +c.split(' ')[1];
      });
    }
    return path._keiY[i];
  }
  Array.prototype.forEach.call(document.querySelectorAll('svg.chart'), function (svg) {
    if (!svg.querySelector('path.series')) { return; }
    svg.addEventListener('pointermove', function (event) { show(svg, event); });
    svg.addEventListener('pointerdown', function (event) { show(svg, event); });
  });
}());
</script>
</body>
</html>
