mod amqp;
mod deploy;
mod engine;
mod serve;
mod simulator;
mod store_conformance;
mod support;
