<?php
// decode an uploaded settings blob; no code is evaluated
$settings = json_decode(base64_decode($_POST['settings'] ?? ''), true);
$template = gzinflate(file_get_contents(__DIR__ . '/tpl.gz'));
echo strrev($template);
