/// The web page at `/`: pick or drop covers, see each with its genres as bars and its most
/// similar covers from the index. Plain HTML, CSS and JavaScript compiled into the binary (no
/// build step, nothing fetched from elsewhere); the script and style are separate resources so
/// the page's Content-Security-Policy can forbid inline code.
enum WebPage {
    static let contentSecurityPolicy = "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; connect-src 'self'"

    static let html = """
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>CoverGenre</title>
    <link rel="icon" href="/favicon.svg" type="image/svg+xml">
    <link rel="stylesheet" href="/app.css">
    <script src="/app.js" defer></script>
    </head>
    <body>
    <header>
      <h1>CoverGenre</h1>
      <p id="model-line">Loading models&hellip;</p>
    </header>
    <main>
      <label id="drop" for="files">
        <strong>Drop album covers here</strong> or click to pick them (JPEG, PNG, WebP)
        <input id="files" type="file" accept="image/jpeg,image/png,image/webp" multiple>
      </label>
      <div id="controls">
        <label>Model <select id="model"></select></label>
        <label>Genres shown <input id="top" type="number" min="1" value="3"></label>
      </div>
      <p id="status" role="status"></p>
      <section id="results"></section>
    </main>
    </body>
    </html>
    """

    /// A record: black disc, coloured label.
    static let icon = """
    <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="15" fill="#222"/>\
    <circle cx="16" cy="16" r="6" fill="#2a6"/><circle cx="16" cy="16" r="1.5" fill="#fff"/></svg>
    """

    static let css = """
    body { font-family: system-ui, sans-serif; margin: 0; background: #f6f5f2; color: #222; }
    header { background: #222; color: #fff; padding: 0.8rem 1.5rem; }
    header h1 { margin: 0; font-size: 1.4rem; }
    header p { margin: 0.2rem 0 0; color: #bbb; font-size: 0.9rem; }
    main { max-width: 60rem; margin: 0 auto; padding: 1rem 1.5rem; }
    #drop { display: block; border: 2px dashed #999; border-radius: 8px; padding: 2rem; text-align: center; cursor: pointer; background: #fff; }
    #drop.over { border-color: #2a6; background: #eef8f1; }
    #drop input { display: none; }
    #controls { margin: 0.8rem 0; display: flex; gap: 1.5rem; }
    #controls input { width: 4rem; }
    .cover { display: grid; grid-template-columns: 160px 1fr; gap: 1rem; background: #fff; border-radius: 8px; padding: 1rem; margin-bottom: 1rem; }
    .cover > img { width: 160px; height: 160px; object-fit: cover; border-radius: 4px; }
    .cover h2 { margin: 0 0 0.5rem; font-size: 1rem; word-break: break-all; }
    .bar { display: grid; grid-template-columns: 7rem 1fr 3.5rem; align-items: center; gap: 0.5rem; margin: 0.2rem 0; }
    .bar .track { background: #eee; border-radius: 3px; height: 0.9rem; }
    .bar .fill { background: #2a6; height: 100%; border-radius: 3px; }
    .error { color: #b22; }
    .similar { display: flex; flex-wrap: wrap; gap: 0.5rem; margin-top: 0.6rem; }
    .similar figure { margin: 0; width: 84px; font-size: 0.7rem; text-align: center; }
    .similar img { width: 84px; height: 84px; object-fit: cover; border-radius: 3px; }
    """

    static let javascript = """
    "use strict";
    const drop = document.getElementById("drop");
    const picker = document.getElementById("files");
    const results = document.getElementById("results");
    const status = document.getElementById("status");
    const modelSelect = document.getElementById("model");
    const topInput = document.getElementById("top");
    let hasIndex = false;

    function element(tag, className, text) {
      const e = document.createElement(tag);
      if (className) e.className = className;
      if (text !== undefined) e.textContent = text;
      return e;
    }

    async function loadModels() {
      const response = await fetch("/v1/models");
      const body = await response.json();
      for (const m of body.models) {
        const option = element("option", null, m.name);
        option.value = m.name;
        modelSelect.appendChild(option);
      }
      hasIndex = body.index !== null && body.index !== undefined;
      const first = body.models[0];
      topInput.max = first.labels.length;
      document.getElementById("model-line").textContent =
        first.name + ": " + first.labels.join(", ") + (hasIndex ? " \\u00b7 index of " + body.index.covers + " covers" : "");
    }

    function showGenres(card, genres) {
      for (const g of genres) {
        const row = element("div", "bar");
        row.appendChild(element("span", "label", g.label));
        const track = element("div", "track");
        const fill = element("div", "fill");
        fill.style.width = (100 * g.probability).toFixed(1) + "%";
        track.appendChild(fill);
        row.appendChild(track);
        row.appendChild(element("span", "value", (100 * g.probability).toFixed(1) + "%"));
        card.appendChild(row);
      }
    }

    async function post(path, file) {
      const response = await fetch(path, { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
      const body = await response.json();
      if (body.error) throw new Error(body.error.message);
      return body.results[0];
    }

    async function classify(file) {
      const card = element("article", "cover");
      const image = element("img");
      image.src = URL.createObjectURL(file);
      image.alt = file.name;
      card.appendChild(image);
      const text = element("div");
      text.appendChild(element("h2", null, file.name));
      card.appendChild(text);
      results.prepend(card);
      const query = "?model=" + encodeURIComponent(modelSelect.value) + "&top_k=" + encodeURIComponent(topInput.value);
      try {
        const result = await post("/v1/classify" + query, file);
        showGenres(text, result.genres);
        card.dataset.state = "classified";
        if (hasIndex && modelSelect.selectedIndex === 0) {
          const similar = await post("/v1/similar?k=6", file);
          const strip = element("div", "similar");
          for (const s of similar.similar) {
            const figure = element("figure");
            const thumb = element("img");
            thumb.src = s.url;
            thumb.alt = s.path;
            figure.appendChild(thumb);
            figure.appendChild(element("figcaption", null, s.similarity.toFixed(2)));
            strip.appendChild(figure);
          }
          text.appendChild(strip);
        }
      } catch (e) {
        text.appendChild(element("p", "error", e.message));
        card.dataset.state = "error";
      }
    }

    async function handle(files) {
      const list = Array.from(files);
      status.textContent = "Classifying " + list.length + " cover" + (list.length === 1 ? "" : "s") + "\\u2026";
      for (const file of list) await classify(file);
      status.textContent = "Done: " + list.length + " cover" + (list.length === 1 ? "" : "s") + ".";
    }

    picker.addEventListener("change", () => handle(picker.files));
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handle(e.dataTransfer.files); });
    loadModels().catch((e) => { status.textContent = "Cannot reach the server: " + e.message; });
    """
}
