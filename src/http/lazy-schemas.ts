/**
 * fastify's schema compilers, used on a route's first request instead of at start-up: making ajv (its formats
 * included) and compiling every route's schema was the largest share of fastify's start-up. The schemas are
 * constants of this code (the tests send every route good and bad bodies), so compiling later moves no error an
 * operator can cause from start-up to a request; a route's first request pays for its own schema, once.
 *
 * The compilers are fastify's own defaults (@fastify/ajv-compiler, @fastify/fast-json-stringify-compiler), loaded
 * from where fastify loads them, with the ajv options each app gives: only the moment of compiling changes. One pool
 * of each for the process: listeners with the same ajv options share one ajv.
 */
import { createRequire } from 'node:module';
import type { FastifyServerOptions } from 'fastify';

type CompilersFactory = NonNullable<NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']>;
type ValidatorFactory = NonNullable<CompilersFactory['buildValidator']>;
type SerializerFactory = NonNullable<CompilersFactory['buildSerializer']>;
type ValidatorCompile = ReturnType<ValidatorFactory>;
type Validate = ReturnType<ValidatorCompile>;
type SerializerCompile = ReturnType<SerializerFactory>;
type Serialize = ReturnType<SerializerCompile>;

// fastify's own dependencies, resolved as fastify resolves them
const fastifyRequire = createRequire(createRequire(import.meta.url).resolve('fastify'));
let validators: ValidatorFactory | undefined;
let serializers: SerializerFactory | undefined;

function defaultValidators(): ValidatorFactory {
  return (validators ??= (fastifyRequire('@fastify/ajv-compiler') as () => ValidatorFactory)());
}

function defaultSerializers(): SerializerFactory {
  return (serializers ??= (fastifyRequire('@fastify/fast-json-stringify-compiler') as () => SerializerFactory)());
}

/** `schemaController.compilersFactory.buildValidator`: each route's validator compiled on its first request. */
export const lazyValidators: ValidatorFactory = (externalSchemas, options) => {
  let compile: ValidatorCompile | undefined;
  return (route) => {
    let validate: Validate | undefined;
    // fastify calls the validator and then reads its `errors`, as ajv's functions carry them
    const validator = (data: unknown) => {
      validate ??= (compile ??= defaultValidators()(externalSchemas, options))(route);
      const result = validate(data);
      validator.errors = validate.errors;
      return result;
    };
    validator.errors = null as Validate['errors'];
    return validator as unknown as Validate;
  };
};

/** `schemaController.compilersFactory.buildSerializer`: each response schema compiled on its first answer. */
export const lazySerializers: SerializerFactory = (externalSchemas, options) => {
  let compile: SerializerCompile | undefined;
  return (route) => {
    let serialize: Serialize | undefined;
    return (data: unknown) => {
      serialize ??= (compile ??= defaultSerializers()(externalSchemas, options))(route);
      return serialize(data);
    };
  };
};
