// Starts Swagger UI on /api/docs (web/api_docs.py): a file, not an inline script, so the page's
// Content-Security-Policy needs no 'unsafe-inline'.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: false,
    persistAuthorization: false,
  });
});
