// Easel page behaviour: A1111's shortcuts, and --theme.
(function () {
  // --theme light|dark: Gradio reads ?__theme=; without it the page follows the browser's preference.
  if (window.EASEL_THEME) {
    const url = new URL(window.location.href);
    if (url.searchParams.get("__theme") !== window.EASEL_THEME) {
      url.searchParams.set("__theme", window.EASEL_THEME);
      window.location.replace(url.href);
    }
  }
  function visibleTab() {
    for (const name of ["txt2img", "img2img"]) {
      const tab = document.getElementById("tab_" + name);
      if (tab && tab.offsetParent !== null) return name;
    }
    return null;
  }
  function press(id) {
    const button = document.getElementById(id);
    if (button) button.click();
  }
  document.addEventListener("keydown", function (e) {
    const tab = visibleTab();
    if (!tab) return;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {  // Ctrl+Enter: generate
      e.preventDefault();
      press(tab + "_generate");
    } else if (e.key === "Escape") {  // Esc: interrupt
      press(tab + "_interrupt");
    }
  });
})();
