/*
 * ASP.NET webshells: process start or script evaluation driven by request input.
 */

rule HW_ASPX_Webshell_Process_Start
{
    meta:
        family = "webshell"
        severity = "critical"
        description = "ASPX page starting a process with arguments taken from the request"

    strings:
        $page1 = "<%@ Page" ascii nocase
        $page2 = "<%@ WebHandler" ascii nocase
        $page3 = "runat=\"server\"" ascii nocase
        $start1 = /Process\s*\.\s*Start\s*\(/ nocase
        $start2 = "ProcessStartInfo" ascii nocase
        $req1 = /Request\s*\.\s*(Form|QueryString|Params|Item)\s*\[/ nocase
        $req2 = /Request\s*\[\s*"/ nocase
        $shell1 = "cmd.exe" ascii nocase
        $shell2 = "/bin/sh" ascii
        $shell3 = "powershell" ascii nocase
        $redirect = "RedirectStandardOutput" ascii nocase

    condition:
        filesize < 2MB and any of ($page*) and any of ($start*) and any of ($req*)
        and (any of ($shell*) or $redirect)
}

rule HW_ASPX_Webshell_Eval
{
    meta:
        family = "webshell"
        severity = "critical"
        description = "ASPX/JScript.NET eval of a request value (China Chopper-style one-line shell)"

    strings:
        $eval = /eval\s*\(\s*Request\s*(\.\s*(Item|Form|QueryString))?\s*\[[^\]]{1,64}\]\s*,\s*"unsafe"/ nocase
        $page = "<%@ Page" ascii nocase

    condition:
        filesize < 1MB and $page and $eval
}
