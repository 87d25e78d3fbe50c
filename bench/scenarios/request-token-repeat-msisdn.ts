import { repeatScenario } from './request-token-repeat.js';

/** request-token-repeat by SMS: the fast lane's msisdn route, with the number parsed on every request. */
export default repeatScenario('msisdn');
