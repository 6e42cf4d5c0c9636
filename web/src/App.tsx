import { lazy, Suspense, useState, useSyncExternalStore } from "react";
import { pageTarget } from "./a11y/focus";
import { RouteAnnouncer } from "./a11y/RouteAnnouncer";
import { clearKey, getKey } from "./api/client";
import { Button } from "./components/ui";
import { SignIn } from "./pages/SignIn";
import { RunsList } from "./pages/RunsList";
import { Link, match, useLocation } from "./router";
import { initialTheme, saveTheme, type Theme } from "./theme";

const RunView = lazy(() => import("./pages/RunView"));
const NewRun = lazy(() => import("./pages/NewRun"));
const Sandboxes = lazy(() => import("./pages/Sandboxes"));
const SandboxView = lazy(() => import("./pages/SandboxView"));
const Audit = lazy(() => import("./pages/Audit"));
const Conversations = lazy(() => import("./pages/Conversations"));
const ConversationView = lazy(() => import("./pages/ConversationView"));
const Alerts = lazy(() => import("./pages/Alerts"));

function subscribeAuth(l: () => void) {
  window.addEventListener("astraforge:auth", l);
  return () => window.removeEventListener("astraforge:auth", l);
}

export function App() {
  const key = useSyncExternalStore(subscribeAuth, getKey);
  const { path } = useLocation();
  return (
    <div className="min-h-screen bg-slate-50 text-slate-900 dark:bg-slate-950 dark:text-slate-100">
      <a
        href="#main"
        onClick={(e) => {
          e.preventDefault(); // no #main in the URL; focus (not only the scroll position) moves
          pageTarget()?.focus();
        }}
        className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-10 focus:bg-white focus:p-2 dark:focus:bg-slate-900"
      >
        Skip to content
      </a>
      <Header signedIn={!!key} path={path} />
      <RouteAnnouncer page={`${key ? "in" : "out"}:${path}`} />
      <main id="main" tabIndex={-1} className="mx-auto max-w-7xl p-4 focus:outline-none">
        {key ? (
          <Suspense fallback={<p>Loading…</p>}>
            <Page path={path} />
          </Suspense>
        ) : (
          <SignIn />
        )}
      </main>
    </div>
  );
}

/** The page for a path. A page about one thing (a run, a sandbox, a conversation) is keyed by its id:
 * going from one to another (back, forward) mounts a fresh page, so no state of the first (its live
 * run state, a selected record, a draft) shows on the second. */
export function Page({ path }: { path: string }) {
  let m;
  if (path === "/" || path === "/runs") return <RunsList />;
  if (path === "/runs/new") return <NewRun />;
  if ((m = match("/runs/:id", path))) return <RunView key={m.id} id={m.id} />;
  if (path === "/sandboxes") return <Sandboxes />;
  if ((m = match("/sandboxes/:id", path))) return <SandboxView key={m.id} id={m.id} />;
  if (path === "/conversations") return <Conversations />;
  if ((m = match("/conversations/:id", path))) return <ConversationView key={m.id} id={m.id} />;
  if (path === "/alerts") return <Alerts />;
  if (path === "/audit") return <Audit />;
  if ((m = match("/audit/:id", path))) return <Audit key={m.id} id={m.id} />;
  return <p>Nothing here. <Link href="/runs" className="underline">Runs</Link></p>;
}

function Header({ signedIn, path }: { signedIn: boolean; path: string }) {
  const [theme, setTheme] = useState<Theme>(initialTheme);
  const nav = [
    ["/runs", "Runs"],
    ["/runs/new", "New run"],
    ["/sandboxes", "Sandboxes"],
    ["/conversations", "Conversations"],
    ["/alerts", "Alerts"],
    ["/audit", "Audit"],
  ];
  return (
    <header className="border-b border-slate-300 bg-white dark:border-slate-700 dark:bg-slate-900">
      <div className="mx-auto flex max-w-7xl flex-wrap items-center gap-4 p-3">
        <Link href="/runs" className="text-lg font-bold">AstraForge</Link>
        {signedIn && (
          <nav aria-label="Main">
            <ul className="flex gap-3">
              {nav.map(([href, label]) => {
                const current = href === "/runs" ? path === "/" || path === "/runs" || (path.startsWith("/runs/") && path !== "/runs/new") : path.startsWith(href);
                return (
                  <li key={href}>
                    <Link href={href} aria-current={current ? "page" : undefined} className={`rounded px-2 py-1 text-sm ${current ? "bg-slate-200 font-semibold dark:bg-slate-700" : "hover:underline"}`}>{label}</Link>
                  </li>
                );
              })}
            </ul>
          </nav>
        )}
        <div className="ml-auto flex gap-2">
          <Button
            aria-label={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}
            onClick={() => {
              const next = theme === "dark" ? "light" : "dark";
              saveTheme(next);
              setTheme(next);
            }}
          >
            {theme === "dark" ? "Light" : "Dark"} theme
          </Button>
          {signedIn && <Button onClick={clearKey}>Sign out</Button>}
        </div>
      </div>
    </header>
  );
}
