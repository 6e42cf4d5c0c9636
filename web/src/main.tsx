import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { applyTheme, initialTheme } from "./theme";
import "./index.css";

applyTheme(initialTheme());
const client = new QueryClient({ defaultOptions: { queries: { retry: 1, refetchOnWindowFocus: false } } });
// A signed-in key (or none) owns what the cache holds: on sign-in, sign-out or a key refused, drop it,
// so the next tenant in this tab is never shown the last one's runs while its own answers load.
window.addEventListener("astraforge:auth", () => client.clear());
createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <QueryClientProvider client={client}>
      <App />
    </QueryClientProvider>
  </StrictMode>,
);
