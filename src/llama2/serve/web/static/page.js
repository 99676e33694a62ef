// What the chat and arena pages share: DOM shortcuts, error messages from the server, the toast,
// code blocks with copy buttons, reading a streamed answer, the message box, the sliding list on
// narrow screens. Loaded before chat.js or arena.js, it defines window.llama2Page and nothing else.
//
// Untrusted text only reaches the page as textContent, or as the server's sanitized HTML.
"use strict";
window.llama2Page = (() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": $('meta[name="csrf-token"]').content };

  // An Error carrying the server's message; a lapsed session goes to sign-in and comes back here.
  async function failure(response) {
    if (response.status === 401) location.assign(`/signin?next=${encodeURIComponent(location.pathname)}`);
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch { /* not JSON */ }
    return new Error(message);
  }

  function toast(text, milliseconds = 5000) {
    const element = $("#toast");
    element.textContent = text;
    element.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { element.hidden = true; }, milliseconds);
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = document.createElement("textarea"); // no clipboard API without HTTPS on other hosts
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    const before = button.textContent;
    if (button.classList.contains("copy-code")) {
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = before; }, 1500);
    } else {
      toast("Copied");
    }
  }

  // Code blocks get their language and a copy button; links open in a new tab.
  function enhance(content) {
    for (const pre of $$("pre", content)) {
      if (pre.parentElement.classList.contains("code-block")) continue;
      const wrapper = document.createElement("div");
      wrapper.className = "code-block";
      const bar = document.createElement("div");
      bar.className = "code-bar";
      const language = document.createElement("span");
      language.textContent = pre.dataset.lang || "text";
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy-code";
      copy.textContent = "Copy";
      copy.setAttribute("aria-label", "Copy code");
      copy.addEventListener("click", () => copyText(pre.textContent, copy));
      bar.append(language, copy);
      pre.replaceWith(wrapper);
      wrapper.append(bar, pre);
    }
    for (const link of $$("a[href]", content)) link.target = "_blank";
  }

  // POST `body` to `url` and call onEvent with each server-sent event's JSON until the stream ends.
  async function streamEvents(url, body, signal, onEvent) {
    const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body), signal });
    if (!response.ok) throw await failure(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (line.startsWith("data: ") && line !== "data: [DONE]") onEvent(JSON.parse(line.slice(6)));
      }
    }
  }

  // The message box grows with its text up to maxHeight; Enter submits, Shift+Enter breaks the line,
  // Escape stops the answer being streamed.
  function messageBox({ box, composer, stopButton, maxHeight, submit, stop, streaming }) {
    const autosize = () => {
      box.style.height = "auto";
      box.style.height = `${Math.min(box.scrollHeight, maxHeight)}px`;
    };
    box.addEventListener("input", autosize);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      }
    });
    composer.addEventListener("submit", (event) => { event.preventDefault(); submit(); });
    stopButton.addEventListener("click", stop);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && streaming()) { event.preventDefault(); stop(); }
    });
    autosize();
    return autosize;
  }

  // Narrow screens: the side list slides in over a scrim; `focusSelector` gets the focus when it opens.
  function slidingList(focusSelector) {
    const nav = (open) => {
      document.body.classList.toggle("nav-open", open);
      $(".scrim").hidden = !open;
      if (open) $(focusSelector).focus();
    };
    document.addEventListener("click", (event) => {
      const target = event.target.closest("[data-action]");
      if (!target) return;
      if (target.dataset.action === "open-nav") nav(true);
      if (target.dataset.action === "close-nav") nav(false);
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && document.body.classList.contains("nav-open")) nav(false);
    });
  }

  return { $, $$, headers, failure, toast, copyText, enhance, streamEvents, messageBox, slidingList };
})();
