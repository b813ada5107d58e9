/*
 * Packed Linux executables. Packing alone is not malice, but packed ELF files in drop locations are
 * typical of miners and botnets, so these rules report at medium severity as "malware" (malware_1001).
 */

import "elf"
import "math"

rule HW_ELF_UPX_Packed
{
    meta:
        family = "malware"
        severity = "medium"
        description = "ELF executable packed with UPX (UPX! header right after the program headers)"

    strings:
        $magic = "UPX!" ascii
        $info = "$Info: This file is packed with the UPX" ascii

    condition:
        uint32(0) == 0x464c457f and ($magic in (0..1024) or $info)
}

rule HW_ELF_High_Entropy_No_Sections
{
    meta:
        family = "malware"
        severity = "medium"
        description = "ELF executable without section headers whose loadable segment is near-random data (packed or encrypted)"

    condition:
        uint32(0) == 0x464c457f and filesize < 64MB and elf.number_of_sections == 0
        and elf.number_of_segments > 0
        and for any seg in elf.segments : (
            seg.type == elf.PT_LOAD and seg.file_size > 4096 and
            math.entropy(seg.offset, seg.file_size) > 7.2
        )
}
