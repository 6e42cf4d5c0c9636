/**
 * Page changes made by script (the router) are silent to a screen reader and leave keyboard focus on
 * whatever was clicked, or on <body> once that is gone. On every change of page (and on sign-in and
 * sign-out) this moves focus to the new page's main heading (to <main> until the page has one) and
 * says its name in a polite live region; the document's title follows.
 */
import { useEffect, useRef, useState } from "react";
import { pageTarget } from "./focus";

const WAIT_FOR_HEADING_MS = 10_000; // pages load lazily; a heading that comes later than this is not waited for

export function RouteAnnouncer({ page }: { page: string }) {
  const [message, setMessage] = useState("");
  const first = useRef(true);
  useEffect(() => {
    const initial = first.current;
    first.current = false;
    const main = document.getElementById("main");
    if (!main) return;
    const heading = () => main.querySelector("h1");
    // the first page of a load is announced by the browser itself; focus stays where it starts
    if (!initial) main.focus({ preventScroll: true });
    const settle = (): boolean => {
      const h1 = heading();
      if (!h1) return false;
      const name = h1.textContent?.trim() ?? "";
      document.title = name ? `${name} · AstraForge` : "AstraForge";
      if (initial) return true;
      // only if the user has not moved on meanwhile
      if (document.activeElement === main || document.activeElement === document.body) pageTarget()?.focus({ preventScroll: true });
      setMessage(name ? `${name} page` : "Page loaded");
      return true;
    };
    if (settle()) return;
    const watch = new MutationObserver(() => settle() && stop());
    const timer = setTimeout(() => stop(), WAIT_FOR_HEADING_MS);
    const stop = () => {
      watch.disconnect();
      clearTimeout(timer);
    };
    watch.observe(main, { childList: true, subtree: true });
    return stop;
  }, [page]);
  return (
    <p role="status" aria-live="polite" aria-atomic="true" data-testid="route-announcer" className="sr-only">
      {message}
    </p>
  );
}
