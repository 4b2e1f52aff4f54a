// One function evaluated in the page (tests/browser_audit.py): every measurement a reader
// would notice, for one colour mode: sideways scroll, contrast, upscaled images, split words.
(mode) => {
  const parse = (s) => {
    const m = /rgba?\(([\d.]+)[, ]+([\d.]+)[, ]+([\d.]+)(?:[, /]+([\d.]+))?\)/.exec(s || "");
    return m ? [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]] : null;
  };
  const over = (top, under) => {  // alpha-composite top over an opaque colour
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a));
  };
  // invert(1) then hue-rotate(180deg), as the CSS filter functions define them (sRGB).
  const invert = (c) => {
    const [r, g, b] = c.map((v) => 255 - v);
    const clamp = (v) => Math.max(0, Math.min(255, v));
    return [clamp(-0.574 * r + 1.43 * g + 0.144 * b),
            clamp(0.426 * r + 0.43 * g + 0.144 * b),
            clamp(0.426 * r + 1.43 * g - 0.856 * b)];
  };
  const lum = (c) => {
    const ch = c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const darkCanvas = mode === "dark" && matchMedia("(prefers-color-scheme: dark)").matches &&
    /dark/.test(getComputedStyle(document.documentElement).colorScheme);
  const canvas = darkCanvas ? [18, 18, 18] : [255, 255, 255];
  const background = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.backgroundImage !== "none" && !/gradient/.test(style.backgroundImage)) return null;
      const c = parse(style.backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let colour = canvas;
    for (let i = layers.length - 1; i >= 0; i--) colour = over(layers[i], colour);
    return colour;
  };
  const snippet = (el) => {
    const text = el.textContent.trim().replace(/\s+/g, " ").slice(0, 40);
    return `<${el.tagName.toLowerCase()}${el.className ? " class=" + el.className : ""}> ${text}`;
  };

  const low = [], seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.data.trim() || !el || seen.has(el)) continue;
    seen.add(el);
    if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    const range = document.createRange(); range.selectNodeContents(node);
    const box = range.getBoundingClientRect();
    if (box.width < 1 || box.height < 1) continue;
    const style = getComputedStyle(el);
    const bg = background(el);
    const fgRaw = parse(style.color);
    if (!bg || !fgRaw) continue;
    let fg = over(fgRaw, bg), back = bg;
    if (mode === "inverted") { fg = invert(fg); back = invert(back); }
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const got = ratio(fg, back);
    if (got < need) low.push({where: snippet(el), ratio: +got.toFixed(2), need,
                              fg: fg.map(Math.round), bg: back.map(Math.round)});
  }

  const images = [];
  for (const img of document.images) {
    if (!img.complete || !img.naturalWidth || !img.checkVisibility()) continue;
    const width = parseFloat(getComputedStyle(img).width);  // the content box, not padding
    if (width > img.naturalWidth + 0.5) images.push({src: img.currentSrc.slice(0, 120),
      rendered: Math.round(width), natural: img.naturalWidth});
  }

  // A word or number (Latin letters and digits, not CJK, which may break anywhere) that a
  // content table's layout broke across two lines (the layout tables of MJML and of the
  // cards say role="presentation").
  const split = [];
  const word = /[\p{L}\p{N}]+(?:[.,:][\p{N}]+)*/gu, han = /[\p{sc=Han}\p{sc=Hiragana}\p{sc=Katakana}\p{sc=Hangul}]/u;
  for (const cell of document.querySelectorAll("td, th")) {
    if (cell.closest("table").getAttribute("role") === "presentation") continue;
    if (cell.querySelector("td, th") || !cell.checkVisibility()) continue;
    const cells = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = cells.nextNode(); node; node = cells.nextNode()) {
      for (const m of node.data.matchAll(word)) {
        if (m[0].length < 2 || han.test(m[0])) continue;
        const range = document.createRange();
        range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
        if (tops.size > 1) split.push(m[0]);
      }
    }
  }
  const root = document.documentElement;
  return {scrollWidth: Math.max(root.scrollWidth, document.body.scrollWidth),
          viewport: root.clientWidth, low, images, split};
}
