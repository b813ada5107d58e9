/*
 * Packed Linux executables. Packing alone is not malice, but packed ELF files in drop locations are
 * typical of miners and botnets, so these rules report at medium severity as "malware" (malware_1001).
 *
 * The ELF header is read with uint8/16/32 rather than the "elf" module: importing that module costs
 * about 0.1-0.2 ms per scanned file (it builds its whole object tree for every file, ELF or not),
 * which would dominate a scan of many small files. Little-endian files only (x86, ARM, RISC-V...).
 */

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
        uint32(0) == 0x464c457f and uint8(5) == 1 and filesize < 64MB and (
            // ELFCLASS64: e_phoff 0x20, e_phnum 0x38, e_shnum 0x3C; phdr 56 bytes: type +0, offset +8, filesz +0x20
            (uint8(4) == 2 and uint16(0x3C) == 0 and uint16(0x38) > 0 and uint16(0x38) <= 32
             and for any i in (0 .. uint16(0x38) - 1) : (
                 uint32(uint32(0x20) + i * 56) == 1
                 and uint32(uint32(0x20) + i * 56 + 0x20) > 4096
                 and math.entropy(uint32(uint32(0x20) + i * 56 + 8), uint32(uint32(0x20) + i * 56 + 0x20)) > 7.2))
            or
            // ELFCLASS32: e_phoff 0x1C, e_phnum 0x2C, e_shnum 0x30; phdr 32 bytes: type +0, offset +4, filesz +0x10
            (uint8(4) == 1 and uint16(0x30) == 0 and uint16(0x2C) > 0 and uint16(0x2C) <= 32
             and for any i in (0 .. uint16(0x2C) - 1) : (
                 uint32(uint32(0x1C) + i * 32) == 1
                 and uint32(uint32(0x1C) + i * 32 + 0x10) > 4096
                 and math.entropy(uint32(uint32(0x1C) + i * 32 + 4), uint32(uint32(0x1C) + i * 32 + 0x10)) > 7.2))
        )
}
