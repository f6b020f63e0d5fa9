// The chat page: the conversation lives here, in this tab, and goes over the WebSocket of
// inference.consumers.ChatConsumer; the reply comes back token by token.
//
// Model output is never parsed as HTML: the small Markdown subset below (fenced code blocks,
// headings, lists, paragraphs, inline code, bold, italics) is built with createElement and
// textContent only, so nothing a model writes can inject markup or script.
(() => {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const log = $("chat-log");
  const input = $("chat-input");
  const form = $("chat-form");
  const sendButton = $("chat-send");
  const stopButton = $("chat-stop");
  const status = $("chat-status");

  // Markdown, safely ---------------------------------------------------------------------

  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+?)\*\*|__([^_]+?)__|\*([^*\s][^*]*?)\*|_([^_\s][^_]*?)_/g;

  function renderInline(parent, text) {
    let last = 0;
    for (const match of text.matchAll(INLINE)) {
      if (match.index > last) appendLines(parent, text.slice(last, match.index));
      let node;
      if (match[1]) {
        node = document.createElement("code");
        node.textContent = match[2];
      } else if (match[3] || match[4]) {
        node = document.createElement("strong");
        node.textContent = match[3] || match[4];
      } else {
        node = document.createElement("em");
        node.textContent = match[5] || match[6];
      }
      parent.append(node);
      last = match.index + match[0].length;
    }
    if (last < text.length) appendLines(parent, text.slice(last));
  }

  function appendLines(parent, text) {
    text.split("\n").forEach((line, index) => {
      if (index > 0) parent.append(document.createElement("br"));
      if (line) parent.append(document.createTextNode(line));
    });
  }

  const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)/;
  const HEADING = /^(#{1,6})\s+(.*)$/;
  const ITEM = /^\s*([-*+]|\d+[.)])\s+(.*)$/;

  function renderMarkdown(container, text) {
    const parts = [];
    const lines = text.split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(FENCE);
      if (fence) {
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i += 1;
        const pre = document.createElement("pre");
        const code = document.createElement("code");
        if (fence[2]) code.dataset.language = fence[2];
        code.textContent = body.join("\n");
        pre.append(code);
        parts.push(pre);
        continue;
      }
      const heading = line.match(HEADING);
      if (heading) {
        const node = document.createElement(`h${Math.min(6, heading[1].length + 2)}`);
        renderInline(node, heading[2]);
        parts.push(node);
        i += 1;
        continue;
      }
      const item = line.match(ITEM);
      if (item) {
        const list = document.createElement(/\d/.test(item[1]) ? "ol" : "ul");
        while (i < lines.length && ITEM.test(lines[i])) {
          const li = document.createElement("li");
          renderInline(li, lines[i].match(ITEM)[2]);
          list.append(li);
          i += 1;
        }
        parts.push(list);
        continue;
      }
      if (!line.trim()) {
        i += 1;
        continue;
      }
      const paragraph = [];
      while (
        i < lines.length && lines[i].trim() &&
        !FENCE.test(lines[i]) && !HEADING.test(lines[i]) && !ITEM.test(lines[i])
      ) paragraph.push(lines[i++]);
      const p = document.createElement("p");
      renderInline(p, paragraph.join("\n"));
      parts.push(p);
    }
    container.replaceChildren(...parts);
  }

  // The conversation ---------------------------------------------------------------------

  let history = []; // {role, content}: only what completed; sent again with each message
  let socket = null;
  let current = null; // the reply streaming now
  let counter = 0;

  function bubble(role, text) {
    const li = document.createElement("li");
    li.className = `chat-msg chat-${role}`;
    const who = document.createElement("div");
    who.className = "chat-who";
    who.textContent = role === "user" ? "You" : "Model";
    const body = document.createElement("div");
    body.className = "chat-body";
    if (text !== undefined) renderMarkdown(body, text);
    li.append(who, body);
    log.append(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function setRunning(running) {
    stopButton.disabled = !running;
    sendButton.disabled = running;
  }

  function figure(list, label, value) {
    if (value === null || value === undefined) return;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }

  function showFigures(reply, frame, note) {
    const list = document.createElement("dl");
    list.className = "chat-figures";
    figure(list, "Time to first token", frame.ttft_ms === null ? null : `${Math.round(frame.ttft_ms)} ms`);
    figure(list, "Speed", frame.tokens_per_second === null ? null : `${frame.tokens_per_second} tokens/s`);
    figure(list, "Prompt tokens", frame.prompt_tokens);
    figure(list, "Completion tokens", frame.completion_tokens);
    if (note) figure(list, "Finished", note);
    reply.node.append(list);
  }

  function showBackend(reply, frame) {
    const line = document.createElement("p");
    line.className = "chat-backend";
    line.append(document.createTextNode(`Served by ${frame.backend} (${frame.tee}, attestation ${frame.attestation}) `));
    const mark = document.createElement("span");
    mark.className = frame.confidential ? "tag ok" : "tag bad chat-not-confidential";
    mark.textContent = frame.confidential ? "confidential" : "not confidential";
    line.append(mark);
    if (frame.masked && frame.masked.length) {
      line.append(document.createTextNode(` · masked in your message: ${frame.masked.join(", ")}`));
    }
    reply.node.append(line);
  }

  function showError(node, frame) {
    const p = document.createElement("p");
    p.className = "chat-error";
    p.setAttribute("role", "alert");
    if (frame.code === "content_filter") {
      const rules = (frame.violations || []).join(", ") || "a rule";
      p.textContent = `Blocked by the guardrails policy: ${rules}. The message was not sent to the model.`;
    } else {
      p.textContent = frame.message || "Something went wrong.";
    }
    node.append(p);
  }

  function onFrame(frame) {
    if (frame.type === "error" && (!current || frame.id !== current.id)) {
      status.textContent = frame.message;
      return;
    }
    if (!current || frame.id !== current.id) return;
    const reply = current;
    if (frame.type === "start") {
      showBackend(reply, frame);
    } else if (frame.type === "token") {
      reply.text += frame.text;
      reply.tokens += 1;
      reply.node.dataset.tokens = String(reply.tokens);
      if (!reply.pending) {
        reply.pending = true;
        requestAnimationFrame(() => {
          reply.pending = false;
          renderMarkdown(reply.body, reply.text);
          reply.node.scrollIntoView({ block: "end" });
        });
      }
    } else if (frame.type === "end" || frame.type === "stopped") {
      renderMarkdown(reply.body, reply.text);
      const note = frame.type === "stopped"
        ? "stopped"
        : frame.finish_reason === "content_filter" ? "ended by the guardrails policy" : frame.finish_reason;
      showFigures(reply, frame, note);
      history.push(reply.user, { role: "assistant", content: reply.text });
      finish(frame.type);
    } else if (frame.type === "error") {
      renderMarkdown(reply.body, reply.text);
      showError(reply.node, frame);
      finish("error");
    }
  }

  function finish(state) {
    current.node.dataset.state = state;
    current = null;
    setRunning(false);
    input.focus();
  }

  function connect() {
    return new Promise((resolve, reject) => {
      if (socket && socket.readyState === WebSocket.OPEN) return resolve(socket);
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(`${scheme}://${location.host}${root.dataset.wsPath}`);
      ws.addEventListener("open", () => {
        socket = ws;
        status.textContent = "";
        resolve(ws);
      });
      ws.addEventListener("message", (event) => onFrame(JSON.parse(event.data)));
      ws.addEventListener("close", (event) => {
        if (socket === ws) socket = null;
        if (event.code === 4403 || event.code === 4404) {
          status.textContent = "You may no longer chat in this domain.";
        }
        if (current) {
          showError(current.node, { message: "The connection closed." });
          finish("error");
        }
        reject(new Error("closed"));
      });
    });
  }

  async function send() {
    const text = input.value.trim();
    if (!text || current) return;
    const messages = [];
    const system = $("chat-system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    const user = { role: "user", content: text };
    messages.push(...history, user);
    const frame = { type: "chat", id: `r${++counter}`, model: $("chat-model").value, messages };
    const temperature = parseFloat($("chat-temperature").value);
    if (!Number.isNaN(temperature)) frame.temperature = temperature;
    const maxTokens = parseInt($("chat-max-tokens").value, 10);
    if (!Number.isNaN(maxTokens)) frame.max_tokens = maxTokens;
    bubble("user", text);
    const node = bubble("assistant");
    node.dataset.state = "streaming";
    current = { id: frame.id, node, body: node.querySelector(".chat-body"), text: "", tokens: 0, user };
    input.value = "";
    setRunning(true);
    try {
      (await connect()).send(JSON.stringify(frame));
    } catch {
      if (current) {
        showError(node, { message: "Could not connect to the chat." });
        finish("error");
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  stopButton.addEventListener("click", () => {
    if (current && socket) socket.send(JSON.stringify({ type: "stop", id: current.id }));
  });
  $("chat-clear").addEventListener("click", () => {
    if (current) return;
    history = [];
    log.replaceChildren();
  });
})();
