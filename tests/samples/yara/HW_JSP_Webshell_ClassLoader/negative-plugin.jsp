<%@ page import="javax.crypto.Cipher" %>
<%
    // plugin loader: classes come from the signed plugin directory, never from the request
    Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
    ClassLoader loader = Thread.currentThread().getContextClassLoader();
    Class<?> k = loader.loadClass("com.example.Plugin");
%>
