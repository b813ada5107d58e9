/*
 * Cryptocurrency miners as they are dropped on compromised Linux hosts: stratum pool URLs, XMRig
 * configuration files, miner binaries' protocol strings, known Monero pools and wallet arguments.
 */

rule HW_Miner_Stratum_URL
{
    meta:
        family = "mining"
        severity = "high"
        description = "Mining pool URL using the stratum protocol (stratum+tcp://, stratum+ssl://)"

    strings:
        $tcp = /stratum2?\+(tcp|ssl|tls):\/\/[a-zA-Z0-9.\-]{3,128}(:[0-9]{2,5})?/ nocase
        $tcp_w = "stratum+tcp://" wide nocase
        $ssl_w = "stratum+ssl://" wide nocase

    condition:
        any of them
}

rule HW_Miner_XMRig_Config
{
    meta:
        family = "mining"
        severity = "high"
        description = "XMRig miner configuration (config.json with pools, donate-level and CPU/RandomX sections)"

    strings:
        $pools = "\"pools\"" ascii
        $donate = "\"donate-level\"" ascii
        $donate2 = "\"donate-over-proxy\"" ascii
        $randomx = "\"randomx\"" ascii
        $rigid = "\"rig-id\"" ascii
        $nicehash = "\"nicehash\"" ascii
        $cpu = "\"max-threads-hint\"" ascii
        $keepalive = "\"keepalive\"" ascii

    condition:
        filesize < 1MB and $pools and ($donate or $donate2) and 2 of ($randomx, $rigid, $nicehash, $cpu, $keepalive)
}

rule HW_Miner_Binary_Strings
{
    meta:
        family = "mining"
        severity = "high"
        description = "Miner program: stratum JSON-RPC methods together with miner options or algorithm names"

    strings:
        $rpc1 = "mining.subscribe" ascii
        $rpc2 = "mining.authorize" ascii
        $rpc3 = "mining.submit" ascii
        $rpc4 = "\"method\":\"login\"" ascii
        $opt1 = "--donate-level" ascii
        $opt2 = "--cpu-priority" ascii
        $opt3 = "--randomx-mode" ascii
        $name1 = "XMRig/" ascii
        $name2 = "cryptonight" ascii nocase
        $name3 = "randomx" ascii nocase
        $name4 = "cpuminer" ascii nocase

    condition:
        (2 of ($rpc*) and any of ($opt*, $name*)) or (2 of ($opt*) and any of ($name*))
}

rule HW_Miner_Pool_Wallet
{
    meta:
        family = "mining"
        severity = "high"
        description = "Command line or script pointing a miner at a known Monero pool, or passing a Monero wallet as pool user"

    strings:
        $pool1 = "pool.supportxmr.com" ascii nocase
        $pool2 = "xmr.pool.minergate.com" ascii nocase
        $pool3 = "pool.minexmr.com" ascii nocase
        $pool4 = "xmrpool.eu" ascii nocase
        $pool5 = "xmr.nanopool.org" ascii nocase
        $pool6 = "gulf.moneroocean.stream" ascii nocase
        $pool7 = "xmr.2miners.com" ascii nocase
        $pool8 = "c3pool.com" ascii nocase
        $pool9 = "pool.hashvault.pro" ascii nocase
        $pool10 = "monerohash.com" ascii nocase
        $url1 = /(-o|--url)[ =]/ ascii
        $url2 = "\"url\"" ascii
        // a 95-character Monero address given as the pool user (-u, --user, "user": ...)
        $wallet = /(-u |--user[= ]|"user"\s*:\s*")4[0-9AB][1-9A-HJ-NP-Za-km-z]{93}/

    condition:
        $wallet or (any of ($pool*) and any of ($url*))
}
