// The admin pages work without this script; it adds a copy button for the one-time link and asks
// before a change that cannot be undone (forms marked data-confirm).
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (!field) return;
  field.select();
  const label = button.querySelector("span");
  try {
    await navigator.clipboard.writeText(field.value);
    if (label) label.textContent = "Copied";
  } catch {
    if (label) label.textContent = "Press Ctrl+C";
  }
});

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});
