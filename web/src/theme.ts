/** Light and dark themes: the system's choice until the user picks one (kept in localStorage). */
export type Theme = "light" | "dark";

export function initialTheme(): Theme {
  const saved = localStorage.getItem("astraforge.theme");
  if (saved === "light" || saved === "dark") return saved;
  return matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function applyTheme(theme: Theme): void {
  document.documentElement.classList.toggle("dark", theme === "dark");
  document.documentElement.style.colorScheme = theme;
}

export function saveTheme(theme: Theme): void {
  localStorage.setItem("astraforge.theme", theme);
  applyTheme(theme);
}
