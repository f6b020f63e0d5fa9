// Domain pages: ask before destructive actions, and save a select as soon as it changes.
// Everything works without this script; it only saves a click.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
for (const select of document.querySelectorAll("select[data-autosubmit]")) {
  const button = select.form.querySelector("button[type=submit]");
  if (button) button.hidden = true;
  select.addEventListener("change", () => select.form.requestSubmit());
}
