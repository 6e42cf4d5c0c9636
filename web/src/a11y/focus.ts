/** Where keyboard focus goes when something it was on goes away (a dialog closes, the page changes):
 * never left on <body>, where a keyboard user has to start again from the top of the page. */

/** The main heading on screen: not one Suspense keeps hidden (display: none) while the next page loads. */
export function shownHeading(main: HTMLElement | null): HTMLElement | null {
  for (const h of main?.querySelectorAll<HTMLElement>("h1") ?? []) if (h.getClientRects().length) return h;
  return null;
}

/** The page's main heading (made focusable by script, not by Tab), else <main> itself. */
export function pageTarget(doc: Document = document): HTMLElement | null {
  const main = doc.getElementById("main");
  const heading = shownHeading(main);
  if (heading) {
    if (!heading.hasAttribute("tabindex")) heading.tabIndex = -1;
    return heading;
  }
  return main;
}

/** Focus `preferred` (the button that opened a dialog); when it cannot take focus (it went disabled
 * or away while the dialog was open), the page's main heading. */
export function returnFocus(preferred: HTMLElement | null | undefined, doc: Document = document): void {
  preferred?.focus();
  if (preferred && doc.activeElement === preferred) return;
  pageTarget(doc)?.focus();
}

/** After an action disabled or removed the control that had focus (Approve, once approved): the page's
 * heading, so the next Tab starts from the page, not from the top of the document. */
export function keepFocusOnPage(doc: Document = document): void {
  const active = doc.activeElement as HTMLElement | null;
  if (!active || active === doc.body || !active.isConnected || (active as HTMLButtonElement).disabled) pageTarget(doc)?.focus();
}
