// The blind arena page: ask one question, watch two anonymous answers stream side by side, vote,
// see the names. #app's data-state: new -> streaming -> voting -> voted (or failed).
//
// Untrusted text (the question, the answers) only reaches the page as textContent, or as the
// server's sanitized HTML (the "html" fields). No inline handlers: the page's CSP allows this file.
"use strict";
(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  const csrf = $('meta[name="csrf-token"]').content;
  const app = $("#app");
  const thread = $("#thread");
  const composer = $("#composer");
  const box = composer.elements.message;
  const localOnly = $("#local-only");
  const sendButton = $("#send");
  const stopButton = $("#stop");
  const voteBar = $("#vote-bar");
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf };
  let battleId = app.dataset.battle ? Number(app.dataset.battle) : null;
  let controller = null; // aborts both answers' stream
  const VOTABLE = ["done", "stopped"];

  function side(name) { return $(`.side[data-side="${name}"]`); }

  function setState(state) {
    app.dataset.state = state;
    const voting = state === "voting";
    for (const button of $$("[data-vote]")) button.disabled = !voting;
    thread.setAttribute("aria-busy", state === "streaming" ? "true" : "false");
  }

  async function failure(response) {
    if (response.status === 401) location.assign(`/signin?next=${encodeURIComponent(location.pathname)}`);
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch { /* not JSON */ }
    return new Error(message);
  }

  function toast(text) {
    const element = $("#toast");
    element.textContent = text;
    element.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { element.hidden = true; }, 6000);
  }

  // ---- answers ------------------------------------------------------------------------------

  function showHtml(pane, html) {
    const content = $(".md", pane);
    content.innerHTML = html; // the server's sanitized rendering
    enhance(content);
  }

  function fillAnswer(pane, answer) {
    pane.dataset.status = answer.status;
    if (answer.html !== undefined) showHtml(pane, answer.html);
    $(".msg-error", pane).textContent = answer.error || "";
  }

  // Code blocks get their language and a copy button, as in the chat; links open in a new tab.
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
      copy.addEventListener("click", async () => {
        try { await navigator.clipboard.writeText(pre.textContent); copy.textContent = "Copied"; }
        catch { copy.textContent = "Select and copy"; }
        setTimeout(() => { copy.textContent = "Copy"; }, 1500);
      });
      bar.append(language, copy);
      pre.replaceWith(wrapper);
      wrapper.append(bar, pre);
    }
    for (const link of $$("a[href]", content)) link.target = "_blank";
  }

  function settle() {
    const statuses = ["a", "b"].map((name) => side(name).dataset.status);
    if (statuses.every((status) => VOTABLE.includes(status))) {
      $("#vote-prompt").textContent = "Which answer is better?";
      setState("voting");
      if (!matchMedia("(pointer: coarse)").matches) $('[data-vote="a"]').focus();
    } else {
      $("#vote-prompt").textContent = "An answer failed or was cut off, so this battle cannot be judged.";
      setState("failed");
    }
  }

  // ---- asking -------------------------------------------------------------------------------

  async function ask() {
    const text = box.value;
    if (!text.trim() || controller) return;
    controller = new AbortController();
    $(".question .user-text").textContent = text;
    for (const name of ["a", "b"]) fillAnswer(side(name), { status: "streaming", html: "", error: "" });
    setState("streaming");
    composer.dataset.state = "streaming";
    sendButton.hidden = true;
    stopButton.hidden = false;
    box.disabled = true;
    let started = false;
    try {
      const body = { message: text, local_only: Boolean(localOnly && localOnly.checked) };
      const response = await fetch("/api/arena/battles", { method: "POST", headers, body: JSON.stringify(body),
                                                           signal: controller.signal });
      if (!response.ok) throw await failure(response);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          started = handle(JSON.parse(line.slice(6))) || started;
        }
      }
    } catch (error) {
      if (!started) { // nothing was kept: ask again
        setState("new");
        box.disabled = false;
        if (error.name !== "AbortError") toast(error.message);
      } else {
        if (error.name !== "AbortError") toast(error.message);
        await showSaved();
      }
    } finally {
      controller = null;
      stopButton.hidden = true;
      sendButton.hidden = false;
      composer.dataset.state = started ? "done" : "idle";
      if (started) settle();
      else box.focus();
    }
  }

  function handle(event) { // true once the battle exists on the server
    if (event.type === "start") {
      battleId = event.battle.id;
      app.dataset.battle = String(battleId);
      history.replaceState(null, "", `/arena/${battleId}`);
      $(".question").dataset.id = event.question.id;
      $("#title").textContent = event.battle.title;
      document.title = `${event.battle.title} · llama2`;
      addToList(event.battle);
      return true;
    }
    const pane = event.side ? side(event.side) : null;
    if (!pane) return false;
    if (event.type === "delta") {
      if (event.html !== undefined) showHtml(pane, event.html);
      else $(".md", pane).append(document.createTextNode(event.text));
    } else if (event.type === "end") {
      fillAnswer(pane, event.answer);
    } else if (event.type === "error") {
      pane.dataset.status = "error";
      $(".msg-error", pane).textContent = event.message;
    }
    return false;
  }

  // After a stop or a broken connection: the answers as the server saved them, once it has (a
  // stopped answer is saved when the server notices the closed stream, a moment later).
  async function showSaved() {
    for (let attempt = 0; attempt < 25; attempt += 1) {
      try {
        const response = await fetch(`/api/arena/battles/${battleId}`);
        if (!response.ok) break;
        const battle = await response.json();
        const answers = ["a", "b"].map((name) => battle.answers[name]);
        if (answers.every((answer) => answer && answer.status !== "streaming")) {
          answers.forEach((answer, i) => fillAnswer(side(["a", "b"][i]), answer));
          return;
        }
      } catch { break; }
      await new Promise((resolve) => { setTimeout(resolve, 200); });
    }
    for (const name of ["a", "b"]) if (side(name).dataset.status === "streaming") side(name).dataset.status = "error";
  }

  function addToList(battle) {
    const item = $("#tpl-battle-item").content.firstElementChild.cloneNode(true);
    item.dataset.id = battle.id;
    const link = $("a", item);
    link.href = `/arena/${battle.id}`;
    link.textContent = battle.title;
    link.setAttribute("aria-current", "page");
    item.classList.add("active");
    for (const other of $$("#battle-list li.active")) other.classList.remove("active");
    $("#battle-list").prepend(item);
    const empty = $(".side-empty");
    if (empty) empty.remove();
  }

  // ---- voting -------------------------------------------------------------------------------

  async function vote(button) {
    if (app.dataset.state !== "voting" || !battleId) return;
    for (const other of $$("[data-vote]")) other.disabled = true;
    try {
      const response = await fetch(`/api/arena/battles/${battleId}/vote`, {
        method: "POST", headers, body: JSON.stringify({ vote: button.dataset.vote }) });
      if (!response.ok) throw await failure(response);
      reveal(await response.json(), button.dataset.vote);
    } catch (error) {
      toast(error.message);
      setState("voting");
    }
  }

  function reveal(battle, choice) {
    for (const name of ["a", "b"]) {
      const pane = side(name);
      const model = battle.models[name];
      $(".side-name", pane).textContent = model.name;
      const badge = $(".side-badge", pane);
      badge.textContent = model.external === null ? "" : (model.external ? "external" : "local");
      badge.className = `badge side-badge ${model.external ? "badge-external" : "badge-local"}`;
      pane.classList.toggle("chosen", choice === name);
    }
    for (const button of $$("[data-vote]")) button.setAttribute("aria-pressed", String(button.dataset.vote === choice));
    const verdict = document.createElement("span");
    verdict.id = "verdict";
    verdict.textContent = battle.verdict;
    const note = document.createElement("span");
    note.className = "reveal-note";
    note.textContent = " The names are shown above.";
    $("#vote-prompt").replaceChildren(verdict, note);
    const mark = $(`#battle-list li[data-id="${battle.id}"] .vote-mark`);
    if (mark) { mark.dataset.voteMark = choice; mark.title = "voted"; }
    setState("voted");
    $(".next-battle").focus();
  }

  voteBar.addEventListener("click", (event) => {
    const button = event.target.closest("[data-vote]");
    if (button) vote(button);
  });

  // ---- the question box ---------------------------------------------------------------------

  function autosize() {
    box.style.height = "auto";
    box.style.height = `${Math.min(box.scrollHeight, 200)}px`;
  }
  box.addEventListener("input", autosize);
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ask();
    }
  });
  composer.addEventListener("submit", (event) => { event.preventDefault(); ask(); });
  stopButton.addEventListener("click", () => { if (controller) controller.abort(); });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && controller) { event.preventDefault(); controller.abort(); }
  });

  // ---- narrow screens: the list slides in -----------------------------------------------------

  function nav(open) {
    document.body.classList.toggle("nav-open", open);
    $(".scrim").hidden = !open;
    if (open) $("#new-battle").focus();
  }
  document.addEventListener("click", (event) => {
    const target = event.target.closest("[data-action]");
    if (!target) return;
    if (target.dataset.action === "open-nav") nav(true);
    if (target.dataset.action === "close-nav") nav(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.body.classList.contains("nav-open")) nav(false);
  });

  // ---- start --------------------------------------------------------------------------------

  $$(".side .md").forEach(enhance);
  setState(app.dataset.state);
  autosize();
  if (app.dataset.state === "new" && !box.disabled && !matchMedia("(pointer: coarse)").matches) box.focus();
})();
