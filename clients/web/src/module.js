export { prompt, VERSION };
