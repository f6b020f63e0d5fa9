// The transcription page: one WebSocket follows the member's jobs and updates each job's
// progress bar, status, backend, error, downloads and transcript as they change.
(function () {
  "use strict";
  // A file over the limit is refused here, before it is sent (the server refuses it too).
  const form = document.getElementById("job-form");
  if (form) {
    const input = form.querySelector("input[name=file]");
    input.addEventListener("change", () => {
      const file = input.files[0];
      const tooBig = file && file.size > Number(form.dataset.maxBytes);
      input.setCustomValidity(tooBig
        ? "The file is larger than the limit of " + form.dataset.maxMb + " MB." : "");
    });
  }
  const root = document.getElementById("jobs");
  if (!root) return;
  const STATUS = {queued: "Queued", running: "Running", succeeded: "Succeeded",
                  failed: "Failed", cancelled: "Cancelled"};
  const TASKS = {transcribe: "Transcribe", translate: "Translate"};
  let retry = 500;

  function show(element, visible) {
    if (element) element.hidden = !visible;
  }

  // A job this page did not draw (made through the API while the page is open): a copy of
  // the page's template, its placeholder id replaced; its fields go in as text only.
  function draw(job) {
    const template = document.getElementById("job-template");
    if (!template || !/^[0-9a-f-]{36}$/.test(job.id)) return null;
    const holder = document.createElement("div");
    holder.innerHTML = template.innerHTML.split(template.dataset.placeholder).join(job.id);
    const section = holder.querySelector("section.job");
    section.querySelector(".job-name").textContent = job.filename || "audio";
    const created = new Date(job.created_at * 1000).toISOString().slice(0, 16).replace("T", " ");
    section.querySelector(".job-meta").textContent =
      [TASKS[job.task] || job.task, job.model, created].join(" · ");
    const empty = root.querySelector(".no-jobs");
    if (empty) empty.remove();
    root.prepend(section);
    return section;
  }

  function update(job) {
    const section = document.getElementById("job-" + job.id) || draw(job);
    if (!section) return;
    const wasDone = section.dataset.status === "succeeded";
    section.dataset.status = job.status;
    section.querySelector(".job-status").textContent = STATUS[job.status] || job.status;
    const bar = section.querySelector(".job-progress");
    bar.value = job.progress;
    bar.textContent = Math.round(job.progress * 100) + "%";
    const backend = section.querySelector(".job-backend");
    if (job.backend) {
      backend.textContent = job.backend.name + (job.backend.confidential
        ? " (" + job.backend.tee_type + ", " + job.backend.attestation + ")"
        : " — NOT CONFIDENTIAL");
    }
    const error = section.querySelector(".job-error");
    error.textContent = job.status === "failed" && job.error ? job.error.message : "";
    show(error, job.status === "failed");
    const finished = ["succeeded", "failed", "cancelled"].includes(job.status);
    show(section.querySelector(".job-cancel"), !finished);
    show(section.querySelector(".job-downloads"), job.status === "succeeded");
    if (job.status === "succeeded" && !wasDone) {
      fetch(section.dataset.result, {credentials: "same-origin"})
        .then((response) => response.ok ? response.text() : "")
        .then((text) => {
          const pre = section.querySelector(".job-text");
          pre.textContent = text;  // text, never HTML
          show(pre, true);
        });
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + root.dataset.socket);
    socket.onopen = () => { retry = 500; };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "jobs") message.jobs.forEach(update);
      else if (message.type === "job") update(message.job);
    };
    socket.onclose = (event) => {
      if (event.code === 4403 || event.code === 4404 || event.code === 4401) return;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }
  connect();
})();
