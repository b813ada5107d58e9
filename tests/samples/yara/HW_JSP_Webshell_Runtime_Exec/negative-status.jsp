<%@ page import="java.io.*" %>
<%
    String host = request.getParameter("host");
    Process p = Runtime.getRuntime().exec(new String[]{"/usr/bin/uptime"});
    out.println("Status page for " + org.owasp.encoder.Encode.forHtml(host));
%>
