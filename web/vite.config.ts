/// <reference types="vitest/config" />
import tailwindcss from "@tailwindcss/vite";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The platform serves dist/ at `/` (api/web.py); `vite dev` proxies the API to a running `make run`.
export default defineConfig({
  plugins: [react(), tailwindcss()],
  build: { outDir: process.env.ASTRAFORGE_WEB_OUT ?? "dist", emptyOutDir: true, sourcemap: false },
  server: {
    proxy: { "/v1": "http://127.0.0.1:8000", "/health": "http://127.0.0.1:8000" },
  },
  test: { environment: "node", include: ["src/**/*.test.{ts,tsx}"] },
});
