// Copy buttons: a button with data-copy-target="ID" copies the text of the element ID.
// Without the script the text stays selectable and copyable by hand.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-HTTP hosts: copy a selection instead.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    var ok = document.execCommand("copy");
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }

  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.dataset.copyTarget);
      var status = button.parentElement.querySelector(".copy-status");
      copyText(source.textContent.trim()).then(
        function () {
          button.textContent = "Copied";
          if (status) { status.textContent = "Copied to the clipboard."; }
        },
        function () {
          if (status) { status.textContent = "Copy failed: select the text and copy it by hand."; }
        }
      );
    });
  });
})();
