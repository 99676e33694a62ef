// The blind arena page: ask one question, watch two anonymous answers stream side by side, vote,
// see the names. #app's data-state: new -> streaming -> voting -> voted (or failed).
//
// Untrusted text (the question, the answers) only reaches the page as textContent, or as the
// server's sanitized HTML (the "html" fields). No inline handlers: the page's CSP allows this file.
"use strict";
(() => {
  const { $, $$, headers, failure, toast, enhance, streamEvents } = window.llama2Page;

  const app = $("#app");
  const thread = $("#thread");
  const composer = $("#composer");
  const box = composer.elements.message;
  const localOnly = $("#local-only");
  const sendButton = $("#send");
  const stopButton = $("#stop");
  const voteBar = $("#vote-bar");
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
      await streamEvents("/api/arena/battles", body, controller.signal, (event) => { started = handle(event) || started; });
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

  const stop = () => { if (controller) controller.abort(); };
  window.llama2Page.messageBox({ box, composer, stopButton, maxHeight: 200, submit: ask, stop,
                                streaming: () => Boolean(controller) });

  // ---- narrow screens: the list slides in -----------------------------------------------------

  window.llama2Page.slidingList("#new-battle");

  // ---- start --------------------------------------------------------------------------------

  $$(".side .md").forEach(enhance);
  setState(app.dataset.state);
  if (app.dataset.state === "new" && !box.disabled && !matchMedia("(pointer: coarse)").matches) box.focus();
})();
