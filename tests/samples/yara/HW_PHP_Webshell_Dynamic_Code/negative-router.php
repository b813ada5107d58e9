<?php
$routes = ['home' => 'show_home', 'about' => 'show_about'];
$page = $_GET['page'] ?? 'home';
$handler = $routes[$page] ?? 'show_home';
call_user_func($handler, $_GET);
echo preg_replace('/\s+/', ' ', $_POST['comment'] ?? '');
