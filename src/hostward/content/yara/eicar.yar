/*
 * EICAR anti-malware test file. Harmless by design: it exists so that operators can check that
 * scanning, alarms and isolation work end to end. The EICAR specification says the file starts with
 * the 68-byte string, optionally followed by white space, and is at most 128 bytes long; a text that
 * merely quotes the string (documentation, this rule file) is not the test file.
 */

rule HW_EICAR_Test_File
{
    meta:
        family = "virus"
        severity = "medium"
        description = "EICAR anti-malware test file (harmless; checks that scanning works)"

    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

    condition:
        $eicar at 0 and filesize <= 128
}
