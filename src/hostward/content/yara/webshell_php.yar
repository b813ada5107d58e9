/*
 * PHP webshells: the constructs that turn an HTTP request into code or command execution. Legitimate
 * PHP reads request input and calls these functions, but not with one fed straight into the other.
 * Request superglobals are matched as $_GET / $_POST / $_REQUEST / $_COOKIE / $_SERVER / $_FILES.
 */

rule HW_PHP_Webshell_Request_Exec
{
    meta:
        family = "webshell"
        severity = "critical"
        description = "PHP code or command execution fed directly with request input (eval/assert/system of $_POST...)"

    strings:
        // eval($_POST['x']), @assert($_REQUEST[...]), system(stripslashes($_GET[...])), ...
        $direct = /(eval|assert|system|passthru|shell_exec|popen|proc_open|pcntl_exec|exec)\s*\(\s*@?\s*(stripslashes\s*\(\s*|trim\s*\(\s*|urldecode\s*\(\s*)?\$_(GET|POST|REQUEST|COOKIE|SERVER|FILES)\s*\[/ nocase
        // backtick operator on request input: `$_GET[cmd]`
        $backtick = /`\s*\$_(GET|POST|REQUEST|COOKIE)\s*\[/ nocase

    condition:
        filesize < 4MB and any of them
}

rule HW_PHP_Webshell_Encoded_Eval
{
    meta:
        family = "webshell"
        severity = "critical"
        description = "PHP eval of a decoded payload (eval(gzinflate(base64_decode(...))) chains, or a decoded request value)"

    strings:
        // two or more decoders nested inside eval/assert
        $chain = /(eval|assert)\s*\(\s*@?\s*(gzinflate|gzuncompress|gzdecode|str_rot13|base64_decode|strrev|convert_uudecode|hex2bin)\s*\(\s*@?\s*(gzinflate|gzuncompress|gzdecode|str_rot13|base64_decode|strrev|convert_uudecode|hex2bin)\s*\(/ nocase
        // one decoder applied to request input
        $request = /(eval|assert)\s*\(\s*@?\s*(gzinflate|gzuncompress|gzdecode|str_rot13|base64_decode|strrev|hex2bin)\s*\(\s*@?\s*\$_(GET|POST|REQUEST|COOKIE|SERVER)\s*\[/ nocase

    condition:
        filesize < 4MB and any of them
}

rule HW_PHP_Webshell_Dynamic_Code
{
    meta:
        family = "webshell"
        severity = "critical"
        description = "PHP code built from request input: preg_replace /e, create_function or a request-named function call"

    strings:
        // preg_replace('/.*/e', $_POST['x'], ...): the /e modifier evaluates the replacement as code
        $preg_e = /preg_replace\s*\(\s*["'][^"'\n]{1,128}\/[imsxu]*e[imsxu]*["']\s*,[^;\n]{0,128}\$_(GET|POST|REQUEST|COOKIE)/ nocase
        $create_function = /create_function\s*\([^;\n]{0,128}\$_(GET|POST|REQUEST|COOKIE)/ nocase
        // $_GET['f']($_POST['a']): the request names the function and supplies its argument
        $var_call = /\$_(GET|POST|REQUEST|COOKIE)\s*\[\s*["']?\w{1,32}["']?\s*\]\s*\(\s*\$_(GET|POST|REQUEST|COOKIE)/ nocase
        // call_user_func / array_map with a request-chosen callback
        $callback = /(call_user_func|call_user_func_array|array_map|array_filter|usort|register_shutdown_function)\s*\(\s*\$_(GET|POST|REQUEST|COOKIE)\s*\[/ nocase

    condition:
        filesize < 4MB and any of them
}
