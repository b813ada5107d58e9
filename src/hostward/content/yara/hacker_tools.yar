/*
 * Offensive tools found on compromised Linux hosts: credential dumpers, privilege-escalation
 * enumerators and tunnelling tools. Markers are the tools' own names, module paths and banners.
 */

rule HW_Tool_MimiPenguin
{
    meta:
        family = "hacker_tool"
        severity = "high"
        description = "mimipenguin: dumps login passwords from the memory of desktop and service processes"

    strings:
        $name = "mimipenguin" ascii nocase
        $t1 = "gnome-keyring-daemon" ascii
        $t2 = "gdm-password" ascii
        $t3 = "lightdm" ascii
        $t4 = "vsftpd" ascii
        $t5 = "sshd:" ascii
        $maps = "/maps" ascii
        $mem = "/mem" ascii
        $shadow = "/etc/shadow" ascii

    condition:
        filesize < 10MB and ($name or (3 of ($t*) and $maps and $mem and $shadow))
}

rule HW_Tool_LaZagne
{
    meta:
        family = "hacker_tool"
        severity = "high"
        description = "LaZagne credential recovery tool (script or PyInstaller bundle)"

    strings:
        $mod1 = "lazagne.softwares" ascii nocase
        $mod2 = "lazagne.config" ascii nocase
        $name = "laZagne" ascii
        $banner = "The LaZagne Project" ascii nocase

    condition:
        any of ($mod*) or $banner or (#name >= 2)
}

rule HW_Tool_LinPEAS
{
    meta:
        family = "hacker_tool"
        severity = "high"
        description = "LinPEAS / PEASS-ng or linux-exploit-suggester privilege-escalation enumeration scripts"

    strings:
        $a = "linpeas" ascii nocase
        $b = "PEASS-ng" ascii
        $c = "peass{" ascii nocase
        $d = "carlospolop" ascii
        $e = "linux-exploit-suggester" ascii nocase
        $f = "Linux Privilege Escalation Awesome Script" ascii nocase

    condition:
        filesize < 20MB and 2 of them
}

rule HW_Tool_Chisel
{
    meta:
        family = "hacker_tool"
        severity = "high"
        description = "chisel TCP/UDP tunnel over HTTP (frequently used to pivot out of compromised networks)"

    strings:
        $mod = "github.com/jpillora/chisel" ascii
        $proto = "chisel-v3" ascii
        $env = "CHISEL_KEY" ascii

    condition:
        $mod or ($proto and $env)
}
