<%@ Page Language="C#" %>
<script runat="server">
    void Page_Load(object sender, EventArgs e) {
        var name = Request.QueryString["name"];
        var psi = new System.Diagnostics.ProcessStartInfo("/usr/local/bin/report-gen");
        System.Diagnostics.Process.Start(psi);
        Response.Write(Server.HtmlEncode(name));
    }
</script>
