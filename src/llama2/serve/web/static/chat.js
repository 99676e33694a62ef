// The chat page: send and stream answers (stop, regenerate, edit and resend), the conversation list
// (search, rename, delete), per-conversation settings, the model picker, copy buttons.
//
// Untrusted text (what users and models wrote) only ever reaches the page as textContent, or as the
// server's sanitized HTML (the "html" fields, rendered and cleaned by the server). No inline handlers:
// the page's Content-Security-Policy allows this file and nothing inline.
"use strict";
(() => {
  const { $, $$, headers, failure, toast, copyText, enhance, streamEvents } = window.llama2Page;

  const app = $("#app");
  const thread = $("#thread");
  const composer = $("#composer");
  const box = composer.elements.message;
  const picker = $('select[name="model"]');
  const sendButton = $("#send");
  const stopButton = $("#stop");
  const settings = $("#settings");
  const list = $("#conversation-list");
  let conversationId = app.dataset.conversation ? Number(app.dataset.conversation) : null;
  let controller = null; // the AbortController of the answer being streamed

  // ---- server calls -------------------------------------------------------------------------

  async function api(method, url, body) {
    const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!response.ok) throw await failure(response);
    return response.status === 204 ? null : response.json();
  }

  // ---- messages -----------------------------------------------------------------------------

  function fromTemplate(id) {
    return $(`#${id}`).content.firstElementChild.cloneNode(true);
  }

  function userMessage(text, id) {
    const article = fromTemplate("tpl-user");
    $(".user-text", article).textContent = text;
    if (id) article.dataset.id = id;
    return article;
  }

  function assistantMessage(answer) {
    const article = fromTemplate("tpl-assistant");
    fillAnswer(article, answer);
    return article;
  }

  function fillAnswer(article, answer) {
    if (answer.id) article.dataset.id = answer.id;
    if (answer.status) article.dataset.status = answer.status;
    if (answer.model) $(".model-name", article).textContent = answer.model + (answer.external ? " · external" : "");
    if (answer.html !== undefined) showHtml(article, answer.html);
    $(".msg-error", article).textContent = answer.error || "";
  }

  function showHtml(article, html) {
    const content = $(".md", article);
    content.innerHTML = html; // the server's sanitized rendering
    enhance(content);
  }

  function scrollToEnd(force) {
    const near = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 120;
    if (force || near) thread.scrollTop = thread.scrollHeight;
  }

  // ---- streaming ----------------------------------------------------------------------------

  function setBusy(busy) {
    composer.dataset.state = busy ? "streaming" : "idle";
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
    thread.setAttribute("aria-busy", busy ? "true" : "false");
    if (!busy && document.activeElement === stopButton) box.focus();
  }

  // POST `body` to `url` and show the answer as it streams (events: see web/chat.py).
  async function stream(url, body, pendingUser) {
    controller = new AbortController();
    setBusy(true);
    let answer = assistantMessage({ status: "streaming", model: picker.value }); // "thinking" until the first words
    thread.append(answer);
    scrollToEnd(true);
    try {
      await streamEvents(url, body, controller.signal, (event) => { answer = handle(event, answer, pendingUser); });
    } catch (error) {
      const started = Boolean(answer.dataset.id);
      if (error.name === "AbortError" && started) {
        answer.dataset.status = "stopped";
      } else if (started) {
        answer.dataset.status = "error";
        $(".msg-error", answer).textContent = error.message;
      } else {
        await reload(); // the server may have kept the question (and a failed answer)
        if (error.name !== "AbortError") toast(error.message);
      }
    } finally {
      controller = null;
      setBusy(false);
      refreshList();
    }
  }

  function handle(event, answer, pendingUser) { // returns the answer's element
    if (event.type === "start") {
      if (pendingUser && event.user_message) pendingUser.dataset.id = event.user_message.id;
      setTitle(event.conversation.title);
      fillAnswer(answer, event.answer);
    } else if (event.type === "delta") {
      if (event.html !== undefined) showHtml(answer, event.html);
      else $(".md", answer).append(document.createTextNode(event.text));
      scrollToEnd(false);
    } else if (event.type === "end") {
      fillAnswer(answer, event.answer);
      scrollToEnd(false);
    } else if (event.error) {
      answer.dataset.status = "error";
      $(".msg-error", answer).textContent = event.error.message;
    }
    return answer;
  }

  function stop() {
    if (controller) controller.abort();
  }

  // Re-read the conversation from the server (after an error whose effect is unknown).
  async function reload() {
    if (!conversationId) return;
    try {
      const conversation = await api("GET", `/api/conversations/${conversationId}`);
      $$(".msg", thread).forEach((element) => element.remove());
      for (const message of conversation.messages) {
        if (message.status === "streaming") message.status = "stopped"; // cut off, or still being written elsewhere
        thread.append(message.role === "user" ? userMessage(message.content, message.id) : assistantMessage(message));
      }
    } catch { /* keep what is shown */ }
  }

  // ---- sending, regenerating, editing -------------------------------------------------------

  function settingsValues() {
    const temperature = settings.querySelector('[name="temperature"]').value;
    const maxTokens = settings.querySelector('[name="max_tokens"]').value;
    return {
      system_prompt: settings.querySelector('[name="system_prompt"]').value,
      temperature: temperature === "" ? null : Number(temperature),
      max_tokens: maxTokens === "" ? null : Number(maxTokens),
    };
  }

  async function ensureConversation() {
    if (conversationId) return conversationId;
    const conversation = await api("POST", "/api/conversations", { model: picker.value, ...settingsValues() });
    conversationId = conversation.id;
    app.dataset.conversation = String(conversation.id);
    history.replaceState(null, "", `/c/${conversation.id}`);
    $("#export-menu").hidden = false;
    $("#export-md").href = `/c/${conversation.id}/export.md`;
    $("#export-json").href = `/c/${conversation.id}/export.json`;
    $("#settings-status").textContent = "Changes are saved for this conversation.";
    return conversationId;
  }

  async function send() {
    const text = box.value;
    if (!text.trim() || controller || !picker.value) return;
    let id;
    try {
      id = await ensureConversation();
    } catch (error) {
      toast(error.message);
      return;
    }
    const pending = userMessage(text);
    thread.append(pending);
    box.value = "";
    autosize();
    scrollToEnd(true);
    await stream(`/api/conversations/${id}/messages`, { message: text, model: picker.value }, pending);
  }

  async function regenerate(article) {
    if (controller || !conversationId) return;
    article.remove();
    await stream(`/api/conversations/${conversationId}/regenerate`, { model: picker.value });
  }

  function edit(article) {
    if (controller || article.classList.contains("editing")) return;
    const text = $(".user-text", article);
    const editor = document.createElement("div");
    editor.className = "editor";
    const area = document.createElement("textarea");
    area.value = text.textContent;
    area.setAttribute("aria-label", "Edit your message");
    const actions = document.createElement("div");
    actions.className = "editor-actions";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "btn";
    cancel.textContent = "Cancel";
    const save = document.createElement("button");
    save.type = "button";
    save.className = "btn btn-primary";
    save.textContent = "Send";
    actions.append(cancel, save);
    editor.append(area, actions);
    article.classList.add("editing");
    $(".bubble", article).after(editor);

    const close = () => { editor.remove(); article.classList.remove("editing"); };
    cancel.addEventListener("click", () => { close(); $('[data-action="edit"]', article).focus(); });
    const submit = async () => {
      const value = area.value;
      if (!value.trim()) return;
      close();
      text.textContent = value;
      let next = article.nextElementSibling;
      while (next) { const after = next.nextElementSibling; if (next.classList.contains("msg")) next.remove(); next = after; }
      await stream(`/api/conversations/${conversationId}/messages/${article.dataset.id}/edit`,
                   { message: value, model: picker.value }, null);
    };
    save.addEventListener("click", submit);
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); submit(); }
      if (event.key === "Escape") { event.preventDefault(); close(); $('[data-action="edit"]', article).focus(); }
    });
    area.focus();
  }

  thread.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const article = button.closest(".msg");
    if (button.dataset.action === "copy") copyText($(".md", article).innerText, button);
    else if (button.dataset.action === "regenerate") regenerate(article);
    else if (button.dataset.action === "edit") edit(article);
  });

  const autosize = window.llama2Page.messageBox({ box, composer, stopButton, maxHeight: 240, submit: send, stop,
                                                  streaming: () => Boolean(controller) });

  // ---- title, model and settings ------------------------------------------------------------

  function setTitle(title) {
    $("#title").textContent = title;
    document.title = `${title} · llama2`;
  }

  function showModel() {
    const option = picker.selectedOptions[0];
    const external = option && option.dataset.external === "true";
    const badge = $("#model-badge");
    badge.textContent = option ? (external ? "External" : "Local") : "";
    badge.className = `badge ${external ? "badge-external" : "badge-local"}`;
    badge.title = external ? "Messages to this model leave this server" : "This model runs on this server";
    $("#external-note").hidden = !external;
    box.placeholder = option ? `Message ${option.value}` : "";
  }

  picker.addEventListener("change", async () => {
    showModel();
    if (!conversationId) return;
    try { await api("PATCH", `/api/conversations/${conversationId}`, { model: picker.value }); }
    catch (error) { toast(error.message); }
  });

  $("#settings-toggle").addEventListener("click", (event) => {
    settings.hidden = !settings.hidden;
    event.currentTarget.setAttribute("aria-expanded", String(!settings.hidden));
    if (!settings.hidden) settings.querySelector("textarea").focus();
  });

  settings.addEventListener("change", async () => {
    if (!conversationId) return;
    const status = $("#settings-status");
    try {
      await api("PATCH", `/api/conversations/${conversationId}`, settingsValues());
      status.textContent = "Saved.";
    } catch (error) {
      status.textContent = error.message;
    }
  });

  // ---- the conversation list ----------------------------------------------------------------

  function listItem(conversation) {
    const item = fromTemplate("tpl-conversation");
    item.dataset.id = conversation.id;
    const link = $("a", item);
    link.href = `/c/${conversation.id}`;
    link.textContent = conversation.title;
    $('[data-action="rename"]', item).setAttribute("aria-label", `Rename ${conversation.title}`);
    $('[data-action="delete"]', item).setAttribute("aria-label", `Delete ${conversation.title}`);
    if (conversation.id === conversationId) { item.classList.add("active"); link.setAttribute("aria-current", "page"); }
    return item;
  }

  async function refreshList() {
    const query = $("#search").value.trim();
    try {
      const found = await api("GET", `/api/conversations${query ? `?q=${encodeURIComponent(query)}` : ""}`);
      list.replaceChildren(...found.data.map(listItem));
      $("#no-results").hidden = found.data.length > 0 || !query;
    } catch { /* the list stays as it was */ }
  }

  let searchTimer = null;
  $("#search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(refreshList, 200);
  });

  function rename(item) {
    const link = $("a", item);
    const input = document.createElement("input");
    input.className = "rename";
    input.value = link.textContent;
    input.setAttribute("aria-label", "New title");
    link.hidden = true;
    link.after(input);
    input.focus();
    input.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      input.remove();
      link.hidden = false;
      if (!save || !title || title === link.textContent) { link.focus(); return; }
      try {
        const conversation = await api("PATCH", `/api/conversations/${item.dataset.id}`, { title });
        link.textContent = conversation.title;
        if (conversation.id === conversationId) setTitle(conversation.title);
      } catch (error) { toast(error.message); }
      link.focus();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); finish(true); }
      if (event.key === "Escape") { event.preventDefault(); finish(false); }
    });
    input.addEventListener("blur", () => finish(true));
  }

  function remove(item) {
    const dialog = $("#confirm-delete");
    $("#confirm-delete-text").textContent = `“${$("a", item).textContent}” is removed for good.`;
    dialog.returnValue = "";
    dialog.showModal();
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "delete") return;
      const id = Number(item.dataset.id);
      try {
        await api("DELETE", `/api/conversations/${id}`);
        item.remove();
        if (id === conversationId) location.assign("/");
      } catch (error) { toast(error.message); }
    }, { once: true });
  }

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const item = button.closest("li");
    if (button.dataset.action === "rename") rename(item);
    else if (button.dataset.action === "delete") remove(item);
  });

  // ---- narrow screens: the list slides in -----------------------------------------------------

  window.llama2Page.slidingList("#search");

  // ---- start --------------------------------------------------------------------------------

  $$(".msg-assistant .md", thread).forEach(enhance);
  showModel();
  scrollToEnd(true);
  if (!matchMedia("(pointer: coarse)").matches) box.focus();
})();
