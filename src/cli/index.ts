export { main, buildProgram, VERSION } from './main.js';
