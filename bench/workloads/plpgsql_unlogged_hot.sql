SELECT plpgsql_allocate_unlogged('bench_hot', 1);
