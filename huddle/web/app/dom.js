// Small DOM pieces the app's modules share: drawn icons and a module's own stylesheet.

const SVG = "http://www.w3.org/2000/svg";

/**
 * A 24×24 icon drawn from one SVG path, rather than an emoji (not every system has an emoji
 * font): filled, or `stroked` as a 2px line.
 * @param {string} d the path
 * @param {{stroked?: boolean}} [options]
 */
export function icon(d, { stroked = false } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "18");
  svg.setAttribute("height", "18");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", d);
  if (stroked) {
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "currentColor");
    path.setAttribute("stroke-width", "2");
    path.setAttribute("stroke-linecap", "round");
  } else {
    path.setAttribute("fill", "currentColor");
  }
  svg.append(path);
  return svg;
}

/**
 * Add the stylesheet at `url` (a module's own, next to it) and resolve once it is in place, so
 * that what the module draws is never shown unstyled (also when the sheet fails to load).
 * @param {string | URL} url
 * @returns {Promise<void>}
 */
export function stylesheet(url) {
  return new Promise((resolve) => {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = String(url);
    link.onload = link.onerror = () => resolve();
    document.head.append(link);
  });
}
