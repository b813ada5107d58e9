<%@ Page Language="Jscript" %>
<%
    var total = eval("1 + 2");
    Response.Write(Request.Item["name"] + total);
%>
