// donjon's web page: copy buttons, and times in the reader's time zone. The page works without
// it; the Content-Security-Policy allows this file and nothing inline.
"use strict";
function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  // Plain HTTP to a host that is not loopback: the older way.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
}
document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.addEventListener("click", () => {
      copyText(b.dataset.copy).then(
        () => { b.textContent = "Copied"; setTimeout(() => { b.textContent = "Copy"; }, 1500); },
        () => { b.textContent = "Select and copy"; },
      );
    });
  }
  for (const t of document.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) t.title = d.toLocaleString();
  }
});
