# One usage row that token_usage refuses (a CHECK constraint, a trigger or
# a deferred constraint trigger a superuser added) does not hold up the
# others.  The worker retries smaller batches down to the failing row,
# sets it aside in token_usage_dead_letters with the error, counts it
# (usage_dead_letters) and raises a usage_dead_letter alert; every other
# row is written, and settle_tokens / rate_limiter_flush() return at once.
# The counter rebuild after a crash still counts the rows set aside: their
# grants were charged.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('dead_letters');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
restart_after_crash = on
rate_limiter.flush_interval = 50ms
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION rate_limiter;
	SELECT set_rate_limit('dl_user', 1000000, '1 day');
	SELECT set_rate_limit('dl_bad', 1000000, '1 day');
	ALTER TABLE token_usage ADD CONSTRAINT dl_check CHECK (user_id <> 'dl_bad');
	CREATE FUNCTION dl_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	  IF NEW.api_endpoint = 'dl_refused' THEN
	    RAISE EXCEPTION 'endpoint % is refused', NEW.api_endpoint USING ERRCODE = 'P0001';
	  END IF;
	  RETURN NEW;
	END $$;
	CREATE TRIGGER dl_refuse BEFORE INSERT ON token_usage FOR EACH ROW EXECUTE FUNCTION dl_refuse();
	CREATE FUNCTION dl_refuse_late() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	  IF NEW.api_endpoint = 'dl_late' THEN
	    RAISE EXCEPTION 'endpoint % is refused at commit', NEW.api_endpoint USING ERRCODE = 'P0002';
	  END IF;
	  RETURN NULL;
	END $$;
	CREATE CONSTRAINT TRIGGER dl_refuse_late AFTER INSERT ON token_usage DEFERRABLE INITIALLY DEFERRED
	  FOR EACH ROW EXECUTE FUNCTION dl_refuse_late();
});

sub metric
{
	my ($name) = @_;
	return $node->safe_psql('postgres', "SELECT get_performance_metrics()->>'$name'");
}

# 1000 grants queued together: two refused by the constraint, one by the
# trigger, one by a deferred constraint trigger (which would fail the
# commit).
$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 1000) g,
	  LATERAL allocate_tokens(CASE WHEN g IN (10, 500) THEN 'dl_bad' ELSE 'dl_user' END, 1, 'high',
	                          CASE WHEN g = 700 THEN 'dl_refused' WHEN g = 800 THEN 'dl_late' END)});
my $started = time;
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT rate_limiter_flush() >= 0');
is($rc, 0, 'rate_limiter_flush() succeeds') or diag($err);
cmp_ok(time - $started, '<', 15, 'and returns without waiting for the stall timeout');
is($node->safe_psql('postgres', "SELECT count(*) FROM token_usage WHERE user_id LIKE 'dl_%'"), '996',
	'every other row is written');
is($node->safe_psql('postgres', q{
	SELECT string_agg(user_id || ':' || coalesce(api_endpoint, '-') || ':' || error_sqlstate, ' '
	                  ORDER BY user_id, api_endpoint)
	  FROM token_usage_dead_letters}),
	'dl_bad:-:23514 dl_bad:-:23514 dl_user:dl_late:P0002 dl_user:dl_refused:P0001',
	'the four refused rows are set aside with their SQLSTATE');
like($node->safe_psql('postgres',
	"SELECT error_message FROM token_usage_dead_letters WHERE api_endpoint = 'dl_refused'"),
	qr/endpoint dl_refused is refused/, 'and the error message');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM token_usage_dead_letters WHERE id IS NOT NULL AND tokens_used = 1 AND priority_level = 'high'"),
	'4', 'with the row as it was queued (its allocation_id, tokens and priority)');
is(metric('usage_dead_letters'), '4', 'counted in get_performance_metrics()');
ok($node->poll_query_until('postgres',
	"SELECT rate_limiter_flush() >= 0 AND count(*) > 0 FROM rate_limit_alerts WHERE kind = 'usage_dead_letter'"),
	'a usage_dead_letter alert is raised');

# The worker keeps flowing, and a settle of a good grant works at once.
my $id = $node->safe_psql('postgres', "SELECT allocation_id FROM allocate_tokens('dl_user', 10, 'high')");
$started = time;
is($node->safe_psql('postgres', "SELECT tokens_refunded FROM settle_tokens($id, 4)"), '6',
	'settle_tokens right after a grant works');
cmp_ok(time - $started, '<', 15, 'without waiting for the stall timeout');

# A transient failure is not a bad row: with lock_timeout set for every
# process, the worker's insert times out on a table another session holds
# locked.  The rows wait (retried after the backoff) and none is set aside.
$node->append_conf('postgresql.conf', "lock_timeout = '100ms'");
$node->reload;
my $locker = $node->background_psql('postgres');
$locker->query_safe('SET lock_timeout = 0');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE token_usage IN EXCLUSIVE MODE');
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT allocate_tokens('dl_user', 1, 'high') FROM generate_series(1, 5)");
ok($node->wait_for_log(qr/canceling statement due to lock timeout/, $log_offset) >= 0,
	'the worker\'s insert times out on the lock');
$locker->query_safe('COMMIT');
$locker->quit;
$node->safe_psql('postgres', 'SELECT rate_limiter_flush()');
is($node->safe_psql('postgres', 'SELECT count(*) FROM token_usage_dead_letters'), '4',
	'rows that met a lock timeout are not set aside');
is($node->safe_psql('postgres', "SELECT count(*) FROM token_usage WHERE user_id = 'dl_user'"), '1002',
	'they are written once the lock is gone');
$node->append_conf('postgresql.conf', "lock_timeout = 0");
$node->reload;

# A row whose id is already in token_usage (a batch the worker wrote but had
# not yet removed from the queue when the server stopped) is skipped, not
# set aside, and the rest of its batch is written: the worker tries a batch
# without ON CONFLICT first and, when that fails, again with it.  A session
# holds token_usage locked while the grants are queued and it writes the
# row with the repeated id, so the worker's insert waits and then meets it.
$node->safe_psql('postgres', "SELECT set_rate_limit('dl_dup', 1000000, '1 day')");
my $holder = $node->background_psql('postgres');
$holder->query_safe('SET lock_timeout = 0');
$holder->query_safe('BEGIN');
$holder->query_safe('LOCK TABLE token_usage IN EXCLUSIVE MODE');
$node->safe_psql('postgres', q{CREATE TABLE dl_dup_ids AS
	SELECT a.allocation_id FROM generate_series(1, 50) g, LATERAL allocate_tokens('dl_dup', g - g + 1, 'high') a});
$holder->query_safe(q{INSERT INTO token_usage (id, user_id, tokens_used, priority_level)
	SELECT max(allocation_id), 'dl_dup_first', 7, 'low' FROM dl_dup_ids});
$log_offset = -s $node->logfile;
$holder->query_safe('COMMIT');
$holder->quit;
$node->safe_psql('postgres', 'SELECT rate_limiter_flush()');
is($node->safe_psql('postgres', "SELECT count(*) FROM token_usage WHERE user_id = 'dl_dup'"), '49',
	'the other 49 rows of the batch are written');
is($node->safe_psql('postgres',
	"SELECT user_id || ':' || tokens_used FROM token_usage WHERE id = (SELECT max(allocation_id) FROM dl_dup_ids)"),
	'dl_dup_first:7', 'the row that was there first stays as it was');
is($node->safe_psql('postgres', 'SELECT count(*) FROM token_usage_dead_letters'), '4',
	'and nothing is set aside for the repeated id');
ok($node->log_contains(qr/rate_limiter worker: a batch of \d+ usage rows of database \d+ was refused \(23505: duplicate key/,
	$log_offset), 'the plain insert was tried first and met the repeated id');

# After a crash the counters are rebuilt from token_usage and the rows set
# aside: dl_bad's two grants still count.
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres',
	"SELECT used FROM get_rate_limit_status('dl_bad') WHERE scope = 'user' AND limit_kind = 'tokens'"),
	'2', 'the rebuilt counter counts the rows set aside');

$node->stop;
done_testing();
