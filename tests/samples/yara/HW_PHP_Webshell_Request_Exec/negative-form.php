<?php
$name = htmlspecialchars($_POST['name'] ?? '', ENT_QUOTES);
$allowed = ['uptime', 'date'];
if (in_array($_GET['report'] ?? '', $allowed, true)) {
    $out = shell_exec(escapeshellcmd($allowed[0]));
}
echo "Hello, $name";
