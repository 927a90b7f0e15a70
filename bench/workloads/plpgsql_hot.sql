SELECT plpgsql_allocate('bench_hot', 1);
