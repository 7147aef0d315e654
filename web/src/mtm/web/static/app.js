// Live updates: the page's event stream (data-live) sends rendered rows and sections; this swaps them in.
(function () {
  const url = document.body.dataset.live;
  if (!url || !window.EventSource) return;
  const parse = (html, parentTag) => {
    const holder = document.createElement(parentTag);
    holder.innerHTML = html.trim();
    return holder.firstElementChild;
  };
  const count = (list, delta) => {
    const total = document.querySelector(`[data-count-of="${list}"]`);
    if (total) total.textContent = String(Math.max(0, Number(total.textContent) + delta));
  };
  const source = new EventSource(url);
  source.addEventListener("ready", () => { document.body.dataset.liveState = "connected"; });
  source.addEventListener("error", () => { document.body.dataset.liveState = "reconnecting"; });
  source.addEventListener("upsert", (e) => {
    const m = JSON.parse(e.data);
    const list = document.getElementById(m.list);
    if (!list) return;
    const row = parse(m.html, "tbody");
    row.classList.add("flash");
    const old = document.getElementById(m.id);
    if (old) old.replaceWith(row); else { list.prepend(row); count(m.list, 1); }
    const empty = document.getElementById(m.list + "-empty");
    if (empty) empty.remove();
  });
  source.addEventListener("remove", (e) => {
    const old = document.getElementById(JSON.parse(e.data).id);
    if (old) { count(old.parentElement.id, -1); old.remove(); }
  });
  source.addEventListener("section", (e) => {
    const m = JSON.parse(e.data);
    const old = document.getElementById(m.id);
    if (!old) return;
    const fresh = parse(m.html, m.within || "div");
    old.replaceWith(fresh);
    const empty = document.getElementById(m.id + "-empty");
    if (empty && fresh.children.length) empty.remove();
  });
})();
