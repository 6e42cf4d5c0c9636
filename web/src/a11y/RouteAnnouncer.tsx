/**
 * Page changes made by script (the router) are silent to a screen reader and leave keyboard focus on
 * whatever was clicked, or on <body> once that is gone. On every change of page (and on sign-in and
 * sign-out) this moves focus to the new page's main heading (to <main> until the page has one) and
 * says its name in a polite live region; the document's title follows.
 */
import { useEffect, useRef, useState } from "react";
import { pageTarget, shownHeading } from "./focus";

const WAIT_FOR_HEADING_MS = 5_000; // pages load lazily; a heading that comes (or changes) later is not waited for

export function RouteAnnouncer({ page }: { page: string }) {
  const [message, setMessage] = useState("");
  const first = useRef(true);
  useEffect(() => {
    const initial = first.current;
    first.current = false;
    const main = document.getElementById("main");
    if (!main) return;
    // the first page of a load is announced by the browser itself; focus stays where it starts
    if (!initial) main.focus({ preventScroll: true });
    // the heading may come after the page's code loads and change once its data does (a run's id,
    // then its title): watched for a while, focused once, announced with the name it settles on
    let focusedOnce = false;
    let announced = "";
    const settle = () => {
      const h1 = shownHeading(main);
      if (!h1) return;
      const name = h1.textContent?.trim() ?? "";
      document.title = name ? `${name} · AstraForge` : "AstraForge";
      if (initial) return;
      // only if the user has not moved on meanwhile
      if (!focusedOnce && (document.activeElement === main || document.activeElement === document.body)) pageTarget()?.focus({ preventScroll: true });
      focusedOnce = true;
      if (name !== announced) setMessage(name ? `${name} page` : "Page loaded");
      announced = name;
    };
    settle();
    const watch = new MutationObserver(settle);
    const timer = setTimeout(() => stop(), WAIT_FOR_HEADING_MS);
    const stop = () => {
      watch.disconnect();
      clearTimeout(timer);
    };
    watch.observe(main, { childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ["style"] });
    return stop;
  }, [page]);
  return (
    <p role="status" aria-live="polite" aria-atomic="true" data-testid="route-announcer" className="sr-only">
      {message}
    </p>
  );
}
