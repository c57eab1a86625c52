<?php
/*
 * kei graph page: one day of a logger's files drawn as inline SVG charts.
 *
 * Open it in a browser on the LAN:  index.php?date=YYYYMMDD&base=NAME&raw=0|1
 *   date  the day; YYYYMMDD or YYYY-MM-DD (default: today, see "Time zone")
 *   base  the <base> of the file names below (default: the first base with
 *         files for that day, else the first base found)
 *   raw   1 (default): draw the raw readings too when the day's raw file is
 *         there; 0: only the 10-minute averages (less to read on a slow box)
 * A date or base that is not well-formed answers 400 and reads no file.
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
 * Charts (server-rendered SVG: no script, no request to anywhere):
 *   power    BR,E7 instantaneous power (W; negative while exporting)
 *   current  BR,E8R and BR,E8T phase currents (A)
 *   energy   kWh per half-hour and the day total.  Forward: the meter's own
 *            half-hour values BR,EA where present (exact), else BR,E0
 *            interpolated at the half-hour boundaries; reverse likewise from
 *            BR,EB / BR,E3.  A half-hour whose ends are not both known, or
 *            whose difference is negative (register wrap), has no bar.
 *   other    one chart per other (unit, sensor), titled with both ids
 * A 10-minute average is drawn at the middle of its window; EA/EB averages
 * at the window start, which is the meter time their value belongs to.
 *
 * Downsampling: the day is 864 plot columns of 100 s.  Per column a series
 * keeps its first, lowest, highest and last reading, in time order (M4), so
 * 8,640 ten-second readings become at most 3,456 vertices that draw the same
 * pixels.  A pause longer than 2.5 typical reading intervals (and at least
 * two columns) breaks the line.
 *
 * Stable hooks for tests and scrapers: svg.chart[data-chart],
 * path.series[data-unit][data-sensor][data-kind=raw|avg][data-points]
 * [data-vertices], rect.bar[data-direction][data-slot][data-kwh],
 * [data-day-total-forward], [data-day-total-reverse].
 *
 * Time zone: config.php's `timezone` if it has one, else php.ini's
 * date.timezone unless it is UTC, else $TZ, else the system's /etc/localtime,
 * else UTC.  Only
 * "today" depends on it: file times are the logger's local clock times.
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
const GRAPH_COLUMN_SECONDS = 100;           // 864 columns per day
const GRAPH_MAX_FILE_BYTES = 67108864;      // 64 MiB
const GRAPH_PEEK_BYTES = 262144;            // tail read of the previous day
const GRAPH_PEEK_SECONDS = 3600;            // how far into the neighbour days
const GRAPH_MAX_INTERPOLATION = 3600;       // longest span E0 is interpolated over
const GRAPH_MAX_OTHER_CHARTS = 40;

// SVG geometry, in viewBox units: plot area 864 x 200 at (60, 36).
const GRAPH_WIDTH = 952;
const GRAPH_HEIGHT = 268;
const GRAPH_LEFT = 60;
const GRAPH_TOP = 36;
const GRAPH_PLOT_WIDTH = 864;
const GRAPH_PLOT_HEIGHT = 200;

const GRAPH_COLORS = ['#1f6fb4', '#d2452b', '#2a9a3c', '#8a55b8', '#e08a12', '#7a5a48'];
// Meter sensors that the energy chart turns into half-hour kWh.
const GRAPH_ENERGY_SENSORS = ['BR,EA', 'BR,E0', 'BR,EB', 'BR,E3'];

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
 * Adds the readings of one file to $times / $values, keyed "unit,sensor".
 *
 * $kind 'raw' or 'sum'; $ymd the file's day.  $limit (all optional):
 *   keys        list of "unit,sensor" to keep (default all)
 *   from, until keep readings with from <= seconds-of-day <= until
 *   offset      added to every time (-86400 for the previous day)
 *   tail_bytes  read only the last this many bytes
 *   stop_after  stop at the first reading later than this (a file's head)
 * Returns ['lines' => n, 'skipped' => n, 'error' => null|text].
 */
function graph_read_file(string $path, string $kind, string $ymd, array &$times,
                         array &$values, array $limit = []): array
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
    $keep = isset($limit['keys']) ? array_flip($limit['keys']) : null;
    $from = $limit['from'] ?? 0;
    $until = $limit['until'] ?? GRAPH_DAY;
    $offset = $limit['offset'] ?? 0;
    $day = graph_slashed($ymd);
    $is_raw = $kind === 'raw';
    $pattern = $is_raw ? GRAPH_RAW_LINE : GRAPH_SUM_LINE;

    while (($line = fgets($handle)) !== false) {
        $line = rtrim($line, "\r\n");
        if ($line === '') {
            continue;
        }
        $result['lines']++;
        if (!preg_match($pattern, $line, $m) || $m[1] !== $day) {
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
        if ($time < $from || $time > $until || ($keep !== null && !isset($keep[$key]))) {
            continue;
        }
        $times[$key][] = $time + $offset;
        $values[$key][] = $value;
    }
    fclose($handle);
    return $result;
}

/** Sorts each series by time if a file had it out of order. */
function graph_sort_series(array &$times, array &$values): void
{
    foreach ($times as $key => $list) {
        $count = count($list);
        for ($i = 1; $i < $count; $i++) {
            if ($list[$i] < $list[$i - 1]) {
                array_multisort($times[$key], SORT_NUMERIC, $values[$key]);
                break;
            }
        }
    }
}

/**
 * M4 downsampling: per plot column the first, lowest, highest and last
 * reading, in time order.  Returns a list of [time, value, starts_new_line].
 */
function graph_downsample(array $t, array $v): array
{
    $n = count($t);
    if ($n === 0) {
        return [];
    }
    $typical = $n > 1 ? ($t[$n - 1] - $t[0]) / ($n - 1) : 0;
    $gap = max(2.5 * $typical, 2 * GRAPH_COLUMN_SECONDS);
    $out = [];
    $previous_time = null;
    $i = 0;
    while ($i < $n) {
        $column = intdiv((int) $t[$i], GRAPH_COLUMN_SECONDS);
        $low = $i;
        $high = $i;
        $j = $i;
        while ($j + 1 < $n && intdiv((int) $t[$j + 1], GRAPH_COLUMN_SECONDS) === $column) {
            $j++;
            if ($v[$j] < $v[$low]) {
                $low = $j;
            }
            if ($v[$j] > $v[$high]) {
                $high = $j;
            }
        }
        $picks = [$i => true, $low => true, $high => true, $j => true];
        ksort($picks);
        $breaks = $previous_time !== null && $t[$i] - $previous_time > $gap;
        foreach (array_keys($picks) as $k => $index) {
            $out[] = [$t[$index], $v[$index], $breaks && $k === 0];
        }
        $previous_time = $t[$j];
        $i = $j + 1;
    }
    return $out;
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

/** Opening of a chart: frame, grid, y ticks for [$low, $high], hour ticks. */
function graph_svg_open(string $id, string $label, array $axis, string $y_unit): string
{
    [$low, $high, $step, $decimals] = $axis;
    $bottom = GRAPH_TOP + GRAPH_PLOT_HEIGHT;
    $right = GRAPH_LEFT + GRAPH_PLOT_WIDTH;
    $svg = sprintf('<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" role="img" aria-label="%s" '
        . 'xmlns="http://www.w3.org/2000/svg"><title>%s</title>',
        graph_h($id), GRAPH_WIDTH, GRAPH_HEIGHT, graph_h($label), graph_h($label));
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
    for ($hour = 0; $hour <= 24; $hour += 3) {
        $x = GRAPH_LEFT + $hour * 3600 / GRAPH_COLUMN_SECONDS;
        $svg .= sprintf('<line x1="%d" y1="%d" x2="%d" y2="%d"/><text x="%d" y="%d" class="xlabel">%02d:00</text>',
            $x, GRAPH_TOP, $x, $bottom, $x, $bottom + 18, $hour);
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
 * A line chart over the day.  $series: list of ['unit', 'sensor', 'kind'
 * (raw|avg), 'label', 'color', 't', 'v'].  $with_zero keeps 0 on the axis.
 */
function graph_line_chart(string $id, string $label, string $y_unit, array $series, bool $with_zero): string
{
    $low = INF;
    $high = -INF;
    foreach ($series as $one) {
        if ($one['v']) {
            $low = min($low, min($one['v']));
            $high = max($high, max($one['v']));
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
    $svg = graph_svg_open($id, $label, $axis, $y_unit);
    $legend = [];
    foreach ($series as $one) {
        $vertices = graph_downsample($one['t'], $one['v']);
        $d = [];
        $last = count($vertices) - 1;
        foreach ($vertices as $i => [$time, $value, $breaks]) {
            $starts = $i === 0 || $breaks;
            $d[] = sprintf('%s%.1F %.1F', $starts ? 'M' : 'L',
                GRAPH_LEFT + $time / GRAPH_COLUMN_SECONDS, $bottom - ($value - $axis_low) * $scale);
            if ($starts && ($i === $last || $vertices[$i + 1][2])) {
                $d[] = 'h0';                // a lone reading: a dot (round line cap)
            }
        }
        $svg .= sprintf('<path class="series %s" d="%s" stroke="%s" data-unit="%s" data-sensor="%s" '
            . 'data-kind="%s" data-points="%d" data-vertices="%d"><title>%s</title></path>',
            $one['kind'], implode('', $d), $one['color'], graph_h($one['unit']), graph_h($one['sensor']),
            $one['kind'], count($one['t']), count($vertices), graph_h($one['label']));
        $legend[] = [$one['label'], $one['color'], $one['kind'] === 'raw' ? 'swatch-line raw' : 'swatch-line'];
    }
    return $svg . graph_legend($legend) . '</svg>';
}

/**
 * Cumulative register value at each half-hour boundary 0..48 of the day
 * ([k => value]).  $exact_only: only readings stamped exactly on a boundary
 * (EA/EB); otherwise interpolate between the readings around it, if they are
 * at most GRAPH_MAX_INTERPOLATION apart.
 */
function graph_at_boundaries(array $t, array $v, bool $exact_only): array
{
    $out = [];
    $n = count($t);
    $i = 0;
    for ($k = 0; $k <= GRAPH_DAY / GRAPH_HALF_HOUR; $k++) {
        $boundary = $k * GRAPH_HALF_HOUR;
        while ($i < $n && $t[$i] < $boundary) {
            $i++;
        }
        if ($i < $n && $t[$i] === $boundary) {
            $out[$k] = $v[$i];
        } elseif (!$exact_only && $i > 0 && $i < $n && $t[$i] - $t[$i - 1] <= GRAPH_MAX_INTERPOLATION) {
            $share = ($boundary - $t[$i - 1]) / ($t[$i] - $t[$i - 1]);
            $out[$k] = $v[$i - 1] + $share * ($v[$i] - $v[$i - 1]);
        }
    }
    return $out;
}

/**
 * kWh per half-hour from cumulative readings.  $sources: list of
 * [name, times, values, exact_only], best first; each boundary takes the
 * first source that knows it.  Returns [slot => [kwh, how]] where how is
 * "exact" when both ends came from exact sources, else "estimated".
 */
function graph_half_hours(array $sources): array
{
    $known = [];
    foreach ($sources as [, $t, $v, $exact_only]) {
        foreach (graph_at_boundaries($t, $v, $exact_only) as $k => $value) {
            if (!isset($known[$k])) {
                $known[$k] = [$value, $exact_only];
            }
        }
    }
    $slots = [];
    for ($k = 0; $k < GRAPH_DAY / GRAPH_HALF_HOUR; $k++) {
        if (isset($known[$k], $known[$k + 1])) {
            $kwh = $known[$k + 1][0] - $known[$k][0];
            if ($kwh > -1e-9) {              // negative: the register wrapped or was reset
                $slots[$k] = [max(0.0, $kwh), $known[$k][1] && $known[$k + 1][1] ? 'exact' : 'estimated'];
            }
        }
    }
    return $slots;
}

/** Bar chart of half-hour kWh; $directions: [name => [color, slots]]. */
function graph_energy_chart(array $directions): string
{
    $high = 0.0;
    foreach ($directions as [, $slots]) {
        foreach ($slots as [$kwh]) {
            $high = max($high, $kwh);
        }
    }
    $axis = graph_axis(0.0, $high > 0 ? $high : 0.1);
    $scale = GRAPH_PLOT_HEIGHT / ($axis[1] - $axis[0]);
    $bottom = GRAPH_TOP + GRAPH_PLOT_HEIGHT;
    $slot_width = GRAPH_HALF_HOUR / GRAPH_COLUMN_SECONDS;
    $bar_width = ($slot_width - 2) / count($directions);
    $svg = graph_svg_open('energy', 'Energy per half-hour (kWh)', $axis, 'kWh');
    $legend = [];
    $lane = 0;
    foreach ($directions as $name => [$color, $slots]) {
        foreach ($slots as $k => [$kwh, $how]) {
            $height = $kwh * $scale;
            $svg .= sprintf('<rect class="bar %s" x="%.1F" y="%.1F" width="%.1F" height="%.1F" fill="%s" '
                . 'data-direction="%s" data-slot="%d" data-kwh="%s"><title>%s %02d:%02d-%02d:%02d %s kWh (%s)</title></rect>',
                $how, GRAPH_LEFT + $k * $slot_width + 1 + $lane * $bar_width, $bottom - $height, $bar_width,
                $height, $color, graph_h($name), $k, graph_num($kwh, 4), graph_h($name),
                intdiv($k, 2), ($k % 2) * 30, intdiv($k + 1, 2), (($k + 1) % 2) * 30,
                graph_num($kwh, 3), $how);
        }
        $legend[] = [$name, $color, 'swatch'];
        $lane++;
    }
    return $svg . graph_legend($legend) . '</svg>';
}

/** The page's URL with some parameters changed. */
function graph_url(array $params): string
{
    return '?' . http_build_query($params, '', '&', PHP_QUERY_RFC3986);
}

/** Everything the page shows for one day and base. */
function graph_build(string $dir, string $ymd, string $base, bool $with_raw): array
{
    $times = ['sum' => [], 'raw' => []];
    $values = ['sum' => [], 'raw' => []];
    $files = [];
    $kinds = $with_raw ? ['sum', 'raw'] : ['sum'];
    foreach ($kinds as $kind) {
        $path = graph_file_path($dir, $kind, $ymd, $base);
        if (!is_file($path)) {
            continue;
        }
        $status = graph_read_file($path, $kind, $ymd, $times[$kind], $values[$kind]);
        $files[] = ['name' => basename($path), 'kind' => $kind] + $status;
        // The neighbour days: cumulative readings near midnight only.
        $previous = graph_file_path($dir, $kind, graph_shift_day($ymd, -1), $base);
        if (is_file($previous)) {
            graph_read_file($previous, $kind, graph_shift_day($ymd, -1), $times[$kind], $values[$kind], [
                'keys' => GRAPH_ENERGY_SENSORS, 'from' => GRAPH_DAY - GRAPH_PEEK_SECONDS,
                'offset' => -GRAPH_DAY, 'tail_bytes' => GRAPH_PEEK_BYTES]);
        }
        $next = graph_file_path($dir, $kind, graph_shift_day($ymd, 1), $base);
        if (is_file($next)) {
            graph_read_file($next, $kind, graph_shift_day($ymd, 1), $times[$kind], $values[$kind], [
                'keys' => GRAPH_ENERGY_SENSORS, 'until' => GRAPH_PEEK_SECONDS,
                'offset' => GRAPH_DAY, 'stop_after' => GRAPH_PEEK_SECONDS + 600]);
        }
        graph_sort_series($times[$kind], $values[$kind]);
    }

    // Line charts: the meter's power and currents, then every other series.
    $keys = array_unique(array_merge(array_keys($times['sum']), array_keys($times['raw'])));
    sort($keys, SORT_STRING);
    $groups = [
        'power' => ['Instantaneous power (W)', 'W', ['BR,E7'], true],
        'current' => ['Phase currents (A)', 'A', ['BR,E8R', 'BR,E8T'], true],
    ];
    $others = array_values(array_diff($keys, ['BR,E7', 'BR,E8R', 'BR,E8T'], GRAPH_ENERGY_SENSORS));
    $hidden = max(0, count($others) - GRAPH_MAX_OTHER_CHARTS);
    foreach (array_slice($others, 0, GRAPH_MAX_OTHER_CHARTS) as $number => $key) {
        [$unit, $sensor] = explode(',', $key, 2);
        $groups['other-' . $number] = ['Unit ' . $unit . ', sensor ' . $sensor, '', [$key], false];
    }
    $charts = [];
    foreach ($groups as $id => [$label, $y_unit, $members, $with_zero]) {
        $series = [];
        foreach ($members as $index => $key) {
            [$unit, $sensor] = explode(',', $key, 2);
            $color = GRAPH_COLORS[$index % count(GRAPH_COLORS)];
            foreach (['raw' => 'raw', 'sum' => '10-min average'] as $kind => $what) {
                if (isset($times[$kind][$key])) {
                    $in_day = graph_day_only($times[$kind][$key], $values[$kind][$key]);
                    $series[] = ['unit' => $unit, 'sensor' => $sensor, 'kind' => $kind === 'sum' ? 'avg' : 'raw',
                        'label' => $sensor . ' ' . $what, 'color' => $color, 't' => $in_day[0], 'v' => $in_day[1]];
                }
            }
        }
        $series = array_values(array_filter($series, function (array $one): bool {
            return count($one['t']) > 0;
        }));
        if ($series) {
            $charts[] = ['id' => $id, 'label' => $label,
                'svg' => graph_line_chart($id, $label, $y_unit, $series, $with_zero)];
        }
    }

    // Half-hour energy, best source first.
    $energy = [];
    foreach (['forward' => ['BR,EA', 'BR,E0', '#2a7fbf'], 'reverse' => ['BR,EB', 'BR,E3', '#e0a020']]
             as $direction => [$fixed, $cumulative, $color]) {
        $sources = [];
        foreach ([[$fixed, 'raw', true], [$fixed, 'sum', true], [$cumulative, 'raw', false],
                  [$cumulative, 'sum', false]] as [$key, $kind, $exact_only]) {
            if (isset($times[$kind][$key])) {
                $sources[] = [$key, $times[$kind][$key], $values[$kind][$key], $exact_only];
            }
        }
        $slots = graph_half_hours($sources);
        if ($slots) {
            $energy[$direction] = [$color, $slots];
        }
    }
    return ['files' => $files, 'charts' => $charts, 'energy' => $energy, 'hidden' => $hidden];
}

/** The readings that belong to the day itself (not the neighbour peeks). */
function graph_day_only(array $t, array $v): array
{
    $keep_t = [];
    $keep_v = [];
    foreach ($t as $i => $time) {
        if ($time >= 0 && $time < GRAPH_DAY) {
            $keep_t[] = $time;
            $keep_v[] = $v[$i];
        }
    }
    return [$keep_t, $keep_v];
}

// ---------------------------------------------------------------- the page

$config = graph_config();
graph_set_timezone($config);
$data_dir = graph_data_dir($config);

$problems = [];
$date_param = graph_param('date');
$base_param = graph_param('base');
// An empty date (the form's field left blank) means today.
$ymd = $date_param === null || $date_param === '' ? date('Ymd')
    : ($date_param === false ? null : graph_parse_date($date_param));
if ($ymd === null) {
    $problems[] = 'The date must be a real day written YYYYMMDD or YYYY-MM-DD.';
}
if ($base_param === false || ($base_param !== null && !preg_match(GRAPH_BASE_PATTERN, $base_param))) {
    $problems[] = 'The base name may only hold letters, digits, "_" and "-".';
}
$with_raw = graph_param('raw') !== '0';

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
$page = ($base !== null && $ymd !== null) ? graph_build($data_dir, $ymd, $base, $with_raw) : null;

http_response_code($problems ? 400 : 200);
header('Content-Type: text/html; charset=utf-8');
// Nothing on this page may load from anywhere: a LAN box may have no internet.
header("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    . "form-action 'self'; base-uri 'none'; frame-ancestors 'self'");
header('X-Content-Type-Options: nosniff');
header('Referrer-Policy: no-referrer');

$title = 'kei' . ($base !== null ? ' - ' . $base : '') . ($ymd !== null ? ' - ' . graph_dashed($ymd) : '');
$keep = ['raw' => $with_raw ? null : '0'];
?>
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title><?= graph_h($title) ?></title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1000px; padding: 0 12px 40px; color: #222; }
header { display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: baseline; padding: 10px 0; border-bottom: 1px solid #ddd; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 16px; margin: 22px 0 2px; }
nav a { margin-right: 10px; }
form { display: inline-flex; gap: 6px; flex-wrap: wrap; align-items: center; }
.note { color: #555; font-size: 13px; margin: 6px 0; }
.problem { color: #a00; font-weight: bold; }
svg.chart { width: 100%; height: auto; display: block; background: #fff; }
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
.totals { font-size: 14px; margin: 4px 0; }
.totals span { display: block; }
</style>
</head>
<body>
<header>
<h1>kei</h1>
<?php if ($ymd !== null): ?>
<nav>
<a rel="prev" href="<?= graph_h(graph_url(['date' => graph_shift_day($ymd, -1), 'base' => $base] + $keep)) ?>">&larr; <?= graph_h(graph_dashed(graph_shift_day($ymd, -1))) ?></a>
<strong><?= graph_h(graph_dashed($ymd)) ?></strong>
<a rel="next" href="<?= graph_h(graph_url(['date' => graph_shift_day($ymd, 1), 'base' => $base] + $keep)) ?>"><?= graph_h(graph_dashed(graph_shift_day($ymd, 1))) ?> &rarr;</a>
<a href="<?= graph_h(graph_url(['date' => $ymd, 'base' => $base, 'raw' => $with_raw ? '0' : null])) ?>"><?= $with_raw ? 'averages only' : 'with raw readings' ?></a>
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
<?php if (!$with_raw): ?><input type="hidden" name="raw" value="0"><?php endif ?>
<button type="submit">Show</button>
</form>
</header>
<main>
<?php foreach ($problems as $problem): ?>
<p class="problem"><?= graph_h($problem) ?> <a href="?">Today</a></p>
<?php endforeach ?>
<?php if (!$problems && $found === null): ?>
<p class="problem">The data directory cannot be read: check data_dir in config.php (or KEI_DATA_DIR).</p>
<?php elseif (!$problems && !$found): ?>
<p class="note">No data files yet (names like sumYYYYMMDD-name.txt).</p>
<?php elseif ($page !== null && !$page['files']): ?>
<p class="note" id="no-data">No files for <?= graph_h(graph_dashed($ymd)) ?> with base <?= graph_h($base) ?>.</p>
<?php elseif ($page !== null): ?>
<p class="note files">Files:
<?php foreach ($page['files'] as $file): ?>
<span class="file" data-kind="<?= graph_h($file['kind']) ?>"><?= graph_h($file['name']) ?> (<?= (int) $file['lines'] ?> lines<?= $file['skipped'] ? ', ' . (int) $file['skipped'] . ' skipped' : '' ?><?= $file['error'] !== null ? ', ' . graph_h($file['error']) : '' ?>)</span>
<?php endforeach ?>
</p>
<?php if ($page['energy']): ?>
<section>
<h2>Energy per half-hour (kWh)</h2>
<p class="totals">
<?php foreach ($page['energy'] as $direction => [$color, $slots]): ?>
<?php $total = array_sum(array_column($slots, 0)); $exact = count(array_filter($slots, function (array $slot): bool { return $slot[1] === 'exact'; })); ?>
<span data-day-total-<?= graph_h($direction) ?>="<?= graph_num($total, 4) ?>" data-slots="<?= count($slots) ?>"><?= graph_h(ucfirst($direction)) ?>: <strong><?= graph_num($total, 3) ?> kWh</strong> in <?= count($slots) ?> of 48 half-hours<?= count($slots) ? ' (' . $exact . ' from the meter\'s half-hour values, ' . (count($slots) - $exact) . ' estimated)' : '' ?>.</span>
<?php endforeach ?>
</p>
<?= graph_energy_chart($page['energy']) ?>
</section>
<?php endif ?>
<?php foreach ($page['charts'] as $chart): ?>
<section>
<h2><?= graph_h($chart['label']) ?></h2>
<?= $chart['svg'] ?>
</section>
<?php endforeach ?>
<?php if ($page['hidden']): ?>
<p class="note"><?= (int) $page['hidden'] ?> more series not drawn.</p>
<?php endif ?>
<?php endif ?>
</main>
</body>
</html>
