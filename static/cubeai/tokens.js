// Personal access token pages: copy a secret to the clipboard, confirm destructive actions,
// and show the custom date and domain list only when they apply. The pages work without it.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Older browsers and plain-HTTP hosts: copy the selection instead.
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
          if (status) { status.textContent = "Token copied to the clipboard."; }
        },
        function () {
          if (status) { status.textContent = "Copy failed: select the token and copy it by hand."; }
        }
      );
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });

  function toggle(radioName, showValue, fieldId) {
    var field = document.getElementById(fieldId);
    var radios = document.querySelectorAll('input[name="' + radioName + '"]');
    if (!field || !radios.length) { return; }
    var wrapper = field.closest(".field") || field;
    function update() {
      var checked = document.querySelector('input[name="' + radioName + '"]:checked');
      var invalid = wrapper.classList.contains("invalid");
      wrapper.hidden = !invalid && !(checked && checked.value === showValue);
    }
    radios.forEach(function (radio) { radio.addEventListener("change", update); });
    update();
  }

  toggle("expiry", "custom", "id_expiry_date");
  toggle("domain_access", "chosen", "id_domains");
})();
