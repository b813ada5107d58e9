/*
 * JSP webshells: command execution from request parameters, and the class-loader shells (Behinder,
 * Godzilla style) that decrypt a posted class and define it at run time.
 */

rule HW_JSP_Webshell_Runtime_Exec
{
    meta:
        family = "webshell"
        severity = "critical"
        description = "JSP running an operating-system command taken from a request parameter"

    strings:
        $direct = /Runtime\s*\.\s*getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(\s*request\s*\.\s*getParameter\s*\(/
        $builder = /new\s+ProcessBuilder\s*\([^;]{0,64}request\s*\.\s*getParameter\s*\(/
        $rt = /Runtime\s*\.\s*getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(/
        $param = /request\s*\.\s*getParameter\s*\(/
        $jsp1 = "<%@" ascii
        $jsp2 = "<%" ascii
        $out = /getInputStream\s*\(\s*\)/

    condition:
        filesize < 2MB and ($direct or $builder or (($jsp1 or $jsp2) and $rt and $param and $out))
}

rule HW_JSP_Webshell_ClassLoader
{
    meta:
        family = "webshell"
        severity = "critical"
        description = "JSP defining a class decrypted from the request body (Behinder/Godzilla-style memory shell loader)"

    strings:
        $jsp = "<%" ascii
        $define = "defineClass" ascii
        $cipher = /Cipher\s*\.\s*getInstance\s*\(\s*"AES/
        $body1 = /request\s*\.\s*getReader\s*\(\s*\)/
        $body2 = /request\s*\.\s*getInputStream\s*\(\s*\)/
        $loader = "ClassLoader" ascii

    condition:
        filesize < 2MB and $jsp and $define and $cipher and $loader and ($body1 or $body2)
}
