// Light or dark: the choice saved in this browser, else the system's (prefers-color-scheme).
// Loaded in <head> without defer, so the theme is set before the first paint (no flash).
"use strict";
(() => {
  const root = document.documentElement;
  const KEY = "llama2-theme";
  const saved = (() => { try { return localStorage.getItem(KEY); } catch { return null; } })();
  if (saved === "light" || saved === "dark") root.dataset.theme = saved;

  const system = () => (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  const current = () => root.dataset.theme || system();

  function label() {
    const next = current() === "dark" ? "light" : "dark";
    for (const button of document.querySelectorAll("[data-theme-toggle]")) {
      button.setAttribute("aria-label", `Switch to the ${next} theme`);
      button.title = `Switch to the ${next} theme`;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    label();
    for (const button of document.querySelectorAll("[data-theme-toggle]")) {
      button.addEventListener("click", () => {
        const next = current() === "dark" ? "light" : "dark";
        root.dataset.theme = next;
        try { localStorage.setItem(KEY, next); } catch { /* private mode: this page only */ }
        label();
      });
    }
  });
})();
