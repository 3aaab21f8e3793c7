# jwks-signer image: build with dev dependencies, ship compiled JS and production dependencies only.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
# V8's young generation grows to 3 x 16 MB under load by default; 2 MB semi-spaces keep RSS under 150 MB with
# 1,000 key sets at no measurable throughput cost (bench/NOTES.md). bench/run.ts starts the service with the ENV lines
# of this stage.
ENV NODE_OPTIONS=--max-semi-space-size=2
# glibc gives each thread that allocates its own malloc arena (up to 8 per core); the service has several
# (public port, libuv's pool that signs); two arenas keep their fragmentation out of RSS.
ENV MALLOC_ARENA_MAX=2
WORKDIR /app
# Files stay owned by root: the process can read them but never rewrite its own code.
COPY package.json package-lock.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# 1000 is the image's `node` user; numeric so Kubernetes can verify runAsNonRoot.
USER 1000:1000
EXPOSE 8080 8081
# Uses node itself (no curl/wget in the image) and honours PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/readyz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
# Exec form: node is PID 1 and receives SIGTERM itself; the service handles it (graceful close),
# and its only children are util-linux's chrt at start-up (setting the signing threads' SCHED_BATCH policy), each
# waited for, so no init process is needed to reap zombies.
CMD ["node", "dist/server.js"]
