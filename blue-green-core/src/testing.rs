//! Programmable in-memory fakes of the runtime, probe, router and store, for tests of the engine
//! and of embedders' own tools. Each can be told to fail at a given call. (Being implemented.)
