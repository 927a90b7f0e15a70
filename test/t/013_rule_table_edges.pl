# The shared rule table at its edges: more rules than rate_limiter.max_rules
# (overflow: every rule still applies, read from its table), and rule
# changes committed while a session is loading the rules into shared memory
# (never lost, never resurrected).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('rule_edges');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
rate_limiter.max_rules = 64
rate_limiter.max_keys = 4000
rate_limiter.usage_log = sync
rate_limiter.role_key_share = 1
# No worker serves "postgres": the sessions of this test do every load and
# rebuild themselves.
rate_limiter.database = 'elsewhere'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE elsewhere');
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub metric { return sql("SELECT get_performance_metrics()->>'$_[0]'"); }

# Each of 300 users gets a quota of 100 + g: more rules than fit.
sql(q{INSERT INTO token_limits (user_id, max_tokens_per_period, period_interval)
      SELECT 'o' || g, 100 + g, '3650 days' FROM generate_series(1, 300) g});
is(sql(q{SELECT count(*) FROM generate_series(1, 300) g,
           LATERAL allocate_tokens('o' || g, 1, 'high') a
         WHERE a.tokens_remaining <> 100 + g - 1 OR a.scope <> 'user'}),
	'0', 'overflow: every one of 300 rules applies with a table of 64');
is(metric('rules_overflowed_databases'), '1', 'overflow: the database is counted as overflowed');
cmp_ok(metric('rule_sql_lookups'), '>', 0, 'overflow: rules were read from their table');
cmp_ok(metric('rules_in_use'), '<=', 64, 'overflow: the table holds what fits');
is(sql("SELECT reason FROM allocate_tokens('nobody', 1, 'high')"), 'no_limit',
	'overflow: a user without a rule is still free');

# Changes reach rules that live only in the table, and rules in memory.
sql(q{UPDATE token_limits SET max_tokens_per_period = 5000 WHERE user_id IN ('o1', 'o299')});
is(sql(q{SELECT string_agg("limit"::text, ',' ORDER BY g) FROM unnest(ARRAY[1, 299]) g,
           LATERAL allocate_tokens('o' || g, 1, 'high')}),
	'5000,5000', 'overflow: updated rules apply wherever they live');
sql(q{DELETE FROM token_limits WHERE user_id = 'o150'});
is(sql("SELECT reason FROM allocate_tokens('o150', 1, 'high')"), 'no_limit',
	'overflow: a deleted rule is gone');

# Hierarchy links overflow like rules: read from rate_limit_parents.
sql(q{SELECT set_rate_limit('ot', 1000000, '3650 days')});
sql(q{INSERT INTO rate_limit_parents (child_id, parent_id) SELECT 'o' || g, 'ot' FROM generate_series(1, 300) g});
is(sql(q{SELECT count(*) FROM generate_series(1, 300) g, LATERAL allocate_tokens('o' || g, 1, 'high') a
         WHERE a.tokens_remaining IS NULL}), '0', 'overflow: every call got a token quota');
is(sql(q{SELECT used FROM get_rate_limit_status('ot')}), '300',
	'overflow: all 300 children were charged to their parent, wherever their links live');
is(sql(q{SELECT limit_owner FROM allocate_tokens('o150', 1, 'high')}), 'ot',
	'overflow: the parent is named');
sql(q{DELETE FROM rate_limit_parents});
sql(q{SELECT allocate_tokens('o' || g, 1, 'high') FROM generate_series(1, 300) g});
is(sql(q{SELECT used FROM get_rate_limit_status('ot')}), '301', 'overflow: removed links are gone');
sql(q{SELECT remove_rate_limit('ot')});

# In-flight limits overflow like rules: read from concurrency_limits (each
# psql session below ends, and frees its leases, before the next).
sql(q{INSERT INTO concurrency_limits (user_id, max_in_flight) SELECT 'o' || g, 2 FROM generate_series(1, 300) g});
sql(q{INSERT INTO concurrency_limits (user_id, api_endpoint, max_in_flight) VALUES ('o7', 'chat', 1)});
is(sql(q{SELECT count(*) FROM generate_series(1, 300) g, LATERAL (
           SELECT string_agg(a.reason, ',' ORDER BY n) AS r
             FROM generate_series(1, 3) n, LATERAL allocate_tokens('o' || g, 1 + 0 * n, 'high') a) x
         WHERE x.r <> 'granted,granted,concurrency_limit_exceeded'}),
	'0', 'overflow: every one of 300 in-flight limits applies, wherever it lives');
is(sql(q{SELECT string_agg(a.reason || ' ' || a.scope, ',' ORDER BY n)
           FROM generate_series(1, 2) n, LATERAL allocate_tokens('o7', 1 + 0 * n, 'high', 'chat') a}),
	'granted user,concurrency_limit_exceeded user_endpoint',
	'overflow: the user-and-endpoint limit is read too');
sql(q{DELETE FROM concurrency_limits});
is(sql(q{SELECT count(*) FROM generate_series(1, 3) n, LATERAL allocate_tokens('o9', 1 + 0 * n, 'high') a
         WHERE NOT a.success}), '0', 'overflow: removed in-flight limits are gone');

# Back under the capacity, a reload puts every rule into memory again and
# ends the overflow.
sql(q{DELETE FROM token_limits WHERE user_id NOT IN (SELECT 'o' || g FROM generate_series(1, 40) g)});
sql('SELECT reload_rate_limits()');
is(sql(q{SELECT count(*) FROM generate_series(2, 40) g, LATERAL allocate_tokens('o' || g, 1, 'high') a
         WHERE a."limit" <> 100 + g}), '0', 'after the reload every rule applies');
is(metric('rules_overflowed_databases'), '0', 'after the reload nothing overflows');
my $lookups = metric('rule_sql_lookups');
sql(q{SELECT allocate_tokens('o' || g, 1, 'high') FROM generate_series(1, 40) g});
is(metric('rule_sql_lookups'), $lookups, 'and no call reads a rule from its table any more');

# Changes committed during a load.  Every load pauses after taking its
# snapshot (whoever runs it: a session or a worker); a reload leaves the
# rules unloaded and a session's call starts the next load.
sql('ALTER SYSTEM SET rate_limiter.debug_rule_load_delay_ms = 2000');
sql('SELECT pg_reload_conf()');
sub start_slow_load
{
	my ($user) = @_;
	sql('SELECT reload_rate_limits()');
	my $caller = $node->background_psql('postgres');
	$caller->query_until(qr/calling/, "\\echo calling\nSELECT \"limit\" FROM allocate_tokens('$user', 1, 'high');\n");
	$node->poll_query_until('postgres', "SELECT state = 'loading' FROM rule_table_status()")
	  or die 'no load started';
	usleep(500_000);    # inside the pause: the snapshot is taken
	return $caller;
}

my $caller = start_slow_load('o10');
# Committed while the load runs: an update, a delete and a new rule.
sql(q{UPDATE token_limits SET max_tokens_per_period = 777 WHERE user_id = 'o20'});
sql(q{DELETE FROM token_limits WHERE user_id = 'o30'});
sql(q{SELECT set_rate_limit('o_new', 4242, '3650 days')});
is(sql("SELECT state FROM rule_table_status()"), 'loading', 'the changes committed during the load');
like($caller->query_safe("SELECT 'done'"), qr/^110\ndone/, "the waiting call is answered");
$caller->quit;
is(sql("SELECT state FROM rule_table_status()"), 'loaded', 'the load finished');
is(sql(q{SELECT "limit" FROM allocate_tokens('o20', 1, 'high')}), '777',
	'an update committed during the load is not overwritten by the load');
is(sql(q{SELECT reason FROM allocate_tokens('o30', 1, 'high')}), 'no_limit',
	'a delete committed during the load is not undone by the load');
is(sql(q{SELECT "limit" FROM allocate_tokens('o_new', 1, 'high')}), '4242',
	'a rule created during the load is there');
is(sql(q{SELECT "limit" FROM allocate_tokens('o11', 1, 'high')}), '111', 'the other rules are loaded');
is(sql(q{SELECT rules FROM rule_table_status()}), sql('SELECT count(*) FROM token_limits'),
	'the table holds exactly the committed rules');
is(sql(q{SELECT tombstones FROM rule_table_status()}), '0', 'and no tombstone is left after the load');

# reload_rate_limits() committed during a load voids it: the load starts
# over and still ends with the committed rules.
$caller = start_slow_load('o12');
sql(q{UPDATE token_limits SET max_tokens_per_period = 888 WHERE user_id = 'o13'});
sql('SELECT reload_rate_limits()');
like($caller->query_safe("SELECT 'done'"), qr/^112\ndone/, 'a load voided by a reload starts over');
$caller->quit;
is(sql(q{SELECT "limit" FROM allocate_tokens('o13', 1, 'high')}), '888', 'and ends with the committed rules');

sql('ALTER SYSTEM RESET rate_limiter.debug_rule_load_delay_ms');
sql('SELECT pg_reload_conf()');

# After a crash the counters are rebuilt from token_usage with the committed
# rules, even when the session that triggers the rebuild has an uncommitted
# change of the rule.
sql(q{SELECT set_rate_limit('c_user', 100, '3650 days');
      SELECT allocate_tokens('c_user', 50, 'high');
      SELECT allocate_tokens('c_user', 10, 'high');});
# A crash: a backend killed with SIGKILL makes the postmaster reset shared
# memory (no counter file is written).
sub crash
{
	my ($out, $err) = ('', '');
	my $sleeper = IPC::Run::start(
		[ 'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'postgres', '-c', 'SELECT pg_sleep(60)' ],
		'>', \$out, '2>', \$err);
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")
	  or die 'the sleeper did not start';
	kill 'KILL', sql("SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'");
	$sleeper->finish;
	$node->poll_query_until('postgres', 'SELECT true') or die 'the server did not come back';
}
crash();
sql(q{BEGIN;
      SELECT set_rate_limit('c_user', 100, '1 hour', algorithm => 'sliding_window');
      SELECT allocate_tokens('someone_else', 1, 'high');
      ROLLBACK;});
like(slurp_file($node->logfile), qr/rebuilt \d+ counters .*\n.*STATEMENT:.*someone_else/,
	'the session with the uncommitted change did the rebuild');
is(sql(q{SELECT used FROM get_rate_limit_status('c_user') WHERE scope = 'user'}), '60',
	'a rebuild triggered inside a transaction with an uncommitted rule change uses the committed rule');

# A reset is as durable as the usage it clears: the rebuild after a crash
# does not count the rows before it.
sql(q{SELECT reset_rate_limit('c_user'); SELECT allocate_tokens('c_user', 5, 'high');});
is(sql(q{SELECT used FROM get_rate_limit_status('c_user') WHERE scope = 'user'}), '5', 'reset, then 5 used');
crash();
is(sql(q{SELECT used FROM get_rate_limit_status('c_user') WHERE scope = 'user'}), '5',
	'after a crash the reset still holds (the 60 tokens before it are not counted again)');

# The rebuild charges each row to its own call's counters (a row without an
# endpoint must not reach the endpoint counters of the row before it), and
# keeps rows granted under a limit lowered since (raising it again must not
# hand them out twice).
sql(q{SELECT set_rate_limit('e_user', 100, '3650 days', 'e1');
      SELECT allocate_tokens('e_user', 10, 'high', 'e1');
      SELECT allocate_tokens('free_user', 40, 'high');
      SET rate_limiter.priority_share_high = 1.0;
      SELECT set_rate_limit('low_user', 400, '3650 days');
      SELECT allocate_tokens('low_user', 300, 'high');
      SELECT set_rate_limit('low_user', 100, '3650 days');});
crash();
is(sql(q{SELECT used FROM get_rate_limit_status('e_user') WHERE scope = 'user_endpoint'}), '10',
	'after a crash a user+endpoint counter holds only its own rows');
sql(q{SELECT set_rate_limit('low_user', 400, '3650 days')});
is(sql(q{SET rate_limiter.priority_share_high = 1.0;
         SELECT tokens_allocated FROM allocate_tokens('low_user', 400, 'high')}), '100',
	'rows granted under a higher limit still count after a crash and a limit raised again');

$node->stop;
done_testing();
